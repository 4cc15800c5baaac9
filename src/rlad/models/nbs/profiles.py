"""Loss profiles: the bank of autoencoder snapshots that turns any image (seen in training or not)
into its loss profile, the profile as predictor input, and the square resize used on the way (images
to the profile resolution, profiles and masks to the predictor grid).

A loss profile is the stack of per-pixel reconstruction errors of one image under the autoencoder at
the last `window` steps of a reset cycle. In training those are the live weights; for unseen images the
model keeps the weights of those steps (the snapshots of one cycle) and replays them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from rlad.models.maps import area_resize
from rlad.models.nbs.autoencoder import PatchAutoencoder, SnapshotStack, error_maps, stacked_block_errors, stacked_error_maps

LOG_EPS = 1e-3  # errors live on [0, 1]; the log spreads the small ones where normal pixels sit


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size): area averaging when shrinking, bilinear when growing."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if images.shape[-1] > size:
        return area_resize(images, (size, size))
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def profile_features(errors: torch.Tensor, grid: int) -> torch.Tensor:
    """Raw error stack (B, window, h, w) at profile size -> predictor input (B, window, grid, grid):
    log errors (scale-free, small values spread) on the predictor grid."""
    return torch.log(resize(errors, grid) + LOG_EPS)


class SnapshotBank:
    """The autoencoder weights at each profile step of one reset cycle; replaying them on an image
    gives its loss profile exactly as training computed it for the labelled images."""

    def __init__(self, snapshots: list[dict] | None = None, template: PatchAutoencoder | None = None):
        self.snapshots: list[dict] = list(snapshots or [])
        self._template = template
        self._modules: list[PatchAutoencoder] | None = None
        self._stacks: dict[torch.dtype, SnapshotStack] = {}

    def __len__(self) -> int:
        return len(self.snapshots)

    def add(self, model: PatchAutoencoder) -> None:
        self.snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        self._template = self._template or model
        self._modules, self._stacks = None, {}

    def clear(self) -> None:
        self.snapshots = []
        self._modules, self._stacks = None, {}

    def _built(self) -> list[PatchAutoencoder]:
        if self._modules is None:
            if self._template is None:
                raise RuntimeError("SnapshotBank needs a template autoencoder to rebuild its snapshots")
            modules = []
            for state in self.snapshots:
                module = copy.deepcopy(self._template)
                module.load_state_dict(state)
                module.eval()
                modules.append(module)
            self._modules = modules
        return self._modules

    def _stacked(self, dtype: torch.dtype = torch.float32) -> SnapshotStack | None:
        """All snapshots as one network, where the architecture allows (`SnapshotStack`)."""
        modules = self._built()
        if dtype not in self._stacks and modules and SnapshotStack.supports(modules[0]):
            self._stacks[dtype] = SnapshotStack(modules, dtype)
        return self._stacks.get(dtype)

    @torch.no_grad()
    def profile(self, images: torch.Tensor, offsets: tuple[int, ...] = (0,)) -> torch.Tensor:
        """(B, 3, h, w) at the profile resolution -> raw errors (B, len(self), h, w): all snapshots
        in one stacked pass where the architecture allows (`SnapshotStack`), else one by one."""
        stack = self._stacked() if offsets == (0,) else None
        if stack is not None:
            return stacked_error_maps(stack, images)
        return torch.stack([error_maps(m, images, offsets) for m in self._built()], dim=1)

    @torch.no_grad()
    def features(self, images: torch.Tensor, grid: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, 3, h, w) at the profile resolution -> the predictor's profile input (B, len(self), grid,
        grid): `profile_features(self.profile(images), grid)`. Where h and w are multiples of 2 * grid
        (the defaults: 128 px profiles, a 64 grid) the area resize starts from the error maps averaged
        over 2 x 2 pixel blocks, which the stacked pass gives without building the full-resolution
        reconstructions (the same averages, summed in another order). `dtype=torch.bfloat16` runs that
        block pass in bf16 (`SnapshotStack`); the other paths stay fp32."""
        height, width = images.shape[-2:]
        stack = self._stacked(dtype)
        if stack is not None and height % (2 * grid) == 0 and width % (2 * grid) == 0:
            return profile_features(stacked_block_errors(stack, images), grid)
        return profile_features(self.profile(images), grid)
