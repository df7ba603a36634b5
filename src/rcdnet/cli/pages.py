"""``rcdnet publish`` and ``rcdnet card``: the docs pages a finished run writes."""

from __future__ import annotations

from pathlib import Path


def cmd_publish(args) -> int:
    from rcdnet.evaluation.publish import publish

    figures = publish(args.run, args.page)
    print(f"written {args.page} and {figures}/")
    return 0


def cmd_card(args) -> int:
    from rcdnet.evaluation.card import model_card

    run, loso = Path(args.run), Path(args.loso) if args.loso else None
    if not (run / "metrics.json").is_file():
        raise ValueError(f"{run}: no metrics.json (is it a finished training run?)")
    if loso is not None and not (loso / "loso_metrics.json").is_file():
        raise ValueError(f"{loso}: no loso_metrics.json (is it a finished `rcdnet cv --by-source` folder?)")
    Path(args.out).write_text(model_card(run, args.data, loso_dir=loso))
    print(f"written {args.out}")
    return 0
