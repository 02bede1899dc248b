"""Pure: which of a node's app images may go. A node keeps the images of the last
`keep` releases of every app, and every image its assignments use."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

KEEP_RELEASES = 5


def images_to_keep(releases: Iterable[Mapping[str, Any]], in_use: Iterable[str], keep: int) -> set[str]:
    """releases: `/paas/releases/<app>/<n>` values, each with `app`, `number`, `image`."""
    by_app: dict[str, list[Mapping[str, Any]]] = {}
    for r in releases:
        by_app.setdefault(r.get("app") or r["spec"]["name"], []).append(r)
    kept = set(in_use)
    for rels in by_app.values():
        kept |= {r["image"] for r in sorted(rels, key=lambda r: r["number"])[-keep:]}
    return kept


def images_to_remove(images: Iterable[Mapping[str, Any]], kept: set[str]) -> list[str]:
    """images: `runtime.list_app_images()` rows. An image goes when none of its
    references (repo digests or tags) is kept; apps still known keep nothing else."""
    return sorted(i["id"] for i in images if not kept & {*i["digests"], *i["tags"]})
