"""The package's layout rules: the folders follow the image (no sub-package imports from one downstream of it),
and no module or function grows past what a reader can hold."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rcdnet"
# sub-package -> sub-packages it must never import (downstream of it on the way from disk to diagnosis)
DOWNSTREAM = {
    "data": {"models", "training", "segment", "evaluation", "predict", "explain", "deploy", "serve", "benchmark", "cli"},
    "models": {"training", "segment", "evaluation", "predict", "explain", "deploy", "serve", "benchmark", "cli"},
    "training": {"segment", "evaluation", "predict", "explain", "deploy", "serve", "benchmark", "cli"},
    "segment": {"predict", "evaluation", "explain", "deploy", "serve", "benchmark", "cli"},
    "predict": {"evaluation", "explain", "deploy", "serve", "benchmark", "cli"},
    "evaluation": {"explain", "deploy", "serve", "benchmark", "cli"},
    "explain": {"deploy", "serve", "benchmark", "cli"},
    "deploy": {"serve", "benchmark", "cli"},
}

# duplicate screening compares images by ImageNet features: a data step that uses a pretrained backbone
ALLOWED = {("data/duplicates.py", "models")}


def _modules():
    return sorted(p for p in SRC.rglob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rcdnet."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("rcdnet.")}
    return out


@pytest.mark.parametrize("package", sorted(DOWNSTREAM))
def test_no_sub_package_imports_from_downstream(package):
    for path in sorted((SRC / package).rglob("*.py")):
        bad = {m for m in _imports(ast.parse(path.read_text())) & DOWNSTREAM[package]
               if (str(path.relative_to(SRC)), m) not in ALLOWED}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_modules_and_functions_stay_small():
    too_long = []
    for path in _modules():
        text = path.read_text()
        if len(text.splitlines()) > 300:
            too_long.append(f"{path.relative_to(SRC)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 65:
                too_long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}()")
    assert not too_long, too_long


def test_readme_is_short_and_leads_with_the_two_commands():
    """A newcomer reads it in five minutes: at most 1,600 words (tables and commands included) and 250 lines, the main
    job and the tests as its two commands, every page it links to present."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    assert len(text.split()) <= 1600, f"README.md: {len(text.split())} words; move the detail into docs/"
    assert len(text.splitlines()) <= 250
    assert "make main    #" in text and "make test    #" in text
    import re

    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (root / link).is_file(), link


def test_the_region_of_interest_mode_is_asked_in_one_place():
    """`roi_margin > 0` means the region-of-interest mode: only the preprocessor and the config say so (their `roi`
    property); everything else asks them, and which box is classified is decided by predict/regions.py alone."""
    import re

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    for path in [*_modules(), *sorted(scripts.glob("*.py"))]:
        if path.name in ("preprocess.py", "config.py"):
            continue
        hits = re.findall(r"roi_margin[\"',\s0)]*(?:[<>]=?|==|!=)\s*0", path.read_text())
        assert not hits, f"{path}: {hits} (use .roi)"


def test_a_model_files_kind_is_decided_by_its_suffix_in_one_place():
    """Which loader a model file needs (checkpoint, ensemble JSON, ONNX) is `rcdnet.predict.model_kind`'s call alone."""
    import re

    for path in _modules():
        if path.relative_to(SRC).as_posix() == "predict/__init__.py":
            continue
        hits = re.findall(r"""suffix\s*(?:==|!=|in)\s*\(?\s*["']\.(?:onnx|json|pt)""", path.read_text())
        assert not hits, f"{path.relative_to(SRC)}: {hits} (use rcdnet.predict.model_kind)"


def test_predictors_are_asked_not_type_tested():
    """What a predictor can do is its :class:`~rcdnet.predict.base.Predictor` methods' business (``scored``,
    ``torch_predictor``): no caller tests ``isinstance(..., TorchPredictor)``, and no predictor forwards unknown
    attributes through ``__getattr__``."""
    import re

    for path in _modules():
        text = path.read_text()
        assert not re.search(r"isinstance\([^)]*TorchPredictor", text), f"{path.relative_to(SRC)}: isinstance test"
        if path.relative_to(SRC).parts[0] == "predict":
            assert "def __getattr__" not in text, f"{path.relative_to(SRC)}: __getattr__ forwarding"


def test_every_subcommand_is_registered_once_with_its_handler():
    """A subcommand is one ``@subcommand`` function in cli/parser.py that names its handler; every ``cmd_*`` handler
    is reachable, none twice."""
    from rcdnet.cli import commands, pages, site_validate
    from rcdnet.cli.parser import build_parser

    handlers = [p.get_default("handler") for p in build_parser().subcommands.values()]
    assert all(callable(h) for h in handlers) and len(set(handlers)) == len(handlers)
    defined = {f for m in (commands, pages, site_validate) for n, f in vars(m).items() if n.startswith("cmd_")}
    assert defined == set(handlers)
