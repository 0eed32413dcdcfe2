"""The maps behind /v1/explain: the bundle's extractors as torch modules, loaded on the first request.

Loading them takes seconds and torch's memory, and most deployments never ask why, so nothing happens at start.
Explanations, loading included, run on one thread of their own: they register and remove backward hooks on shared
modules, which two calls at once must not interleave (one thread needs no lock), and they stay off the decode
pool and the batcher.
A server without torch answers 501 with the line that installs it.
"""

from __future__ import annotations

import asyncio
import base64
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..errors import BfmError
from ..optional import require
from ..routing import Route
from .failures import Refused

if TYPE_CHECKING:
    from ..explain import Explainer


def png_data_url(image: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise BfmError("could not encode a map as PNG")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


@dataclass
class Explaining:
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="bfm-explain"))
    _explainer: Explainer | None = None

    def _load(self, bundle: Path) -> Explainer:
        if self._explainer is None:  # only ever called on ``pool``'s one thread
            from ..eval.methods import Method
            from ..explain import Explainer

            try:
                require("torch", "explain", "explanations")
                require("bfm_models", "explain", "explanations")
            except BfmError as exc:  # a missing extra: the server's state, not the request's fault
                raise Refused(501, f"this server cannot explain: {exc}") from None
            self._explainer = Explainer(Method("bundle", bundle, "routed"))
        return self._explainer

    def _faces(self, bundle: Path, crops: list[np.ndarray], route: Route) -> list[dict[str, Any]]:
        from ..explain.figure import heat, overlay
        from ..explain.regions import mask_region_share

        maps = self._load(bundle).saliency(crops, route)
        shares = mask_region_share(maps)
        return [{"network": route,
                 "map": png_data_url(cv2.applyColorMap(heat(saliency), cv2.COLORMAP_INFERNO)),
                 "overlay": png_data_url(cv2.cvtColor(overlay(crop, saliency), cv2.COLOR_RGB2BGR)),
                 "mask_region_share": round(float(share), 6)}
                for crop, saliency, share in zip(crops, maps, shares)]

    async def faces(self, bundle: Path, crops: list[np.ndarray], route: Route) -> list[dict[str, Any]]:
        """Per crop: ``route``'s guided-backpropagation map and overlay as PNG data URLs, and its mask-region
        share (``bfm_deploy.explain``)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._faces, bundle, crops, route)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
