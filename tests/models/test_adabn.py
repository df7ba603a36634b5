import torch

from rcdnet.models.adabn import adapt_batchnorm
from rcdnet.models.registry import create_model


def test_adabn_changes_only_normalisation_statistics():
    torch.manual_seed(0)
    model = create_model("rcdnet", pretrained=False).eval()
    target = [torch.randn(8, 3, 224, 224) * 2 + 1 for _ in range(2)]  # a shifted "domain"
    adapted = adapt_batchnorm(model, target)
    before, after = model.state_dict(), adapted.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing adapted"
    assert all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed), changed
    assert not adapted.training
    x = target[0][:2]
    assert not torch.allclose(model(x), adapted(x))  # the adapted statistics change the output
