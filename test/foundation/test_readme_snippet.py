"""The README's bring-your-own-parent snippet runs as written (with a toy network standing in for the user's)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_adapter_snippet_composes_a_user_module_with_another_parent():
    section = README.read_text().split("## Your own policies as parents", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)

    from gpc_ros.compose import ActionNormalization, VPTime
    from gpc_ros.compose.analytic import GaussianParent
    from gpc_ros.compose.schedule import make_vp_scheduler

    class MyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.film = torch.nn.Linear(3, 7)

        def forward(self, x_t, t, encoding):
            return 0.1 * x_t + self.film(encoding)[:, None, :]

    low, high = [-1.0] * 7, [1.0] * 7
    scheduler = make_vp_scheduler("ddpm")
    namespace = {
        "my_net": MyNet(), "my_ddpm_scheduler": scheduler, "low": low, "high": high,
        "my_obs_encoder": lambda obs: torch.as_tensor(obs, dtype=torch.float32),
        "other_parent": GaussianParent("other", "epsilon", VPTime(scheduler.alphas_cumprod), 16, 7, var=0.01,
                                       normalization=ActionNormalization.min_max(low, high)),
        "obs_mine": [[0.1, 0.2, 0.3]], "obs_other": torch.zeros(1, 16, 7),
    }
    exec(compile(code, "README.md", "exec"), namespace)
    chunk = namespace["chunk"]
    assert tuple(chunk.actions.shape) == (1, 1, 16, 7)
    assert torch.isfinite(chunk.actions).all()
