"""docs/federation.md traces one add_task through the code, naming files and functions: they exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_code_entrypoints_named_in_the_docs_exist() -> None:
    text = (ROOT / "docs" / "federation.md").read_text()
    section = text.split("### Code entrypoints", 1)[1].split("\n#", 1)[0]
    named = re.findall(r"`((?:[a-z_]+/)+[a-z_]+\.py)` `([A-Za-z_][\w.]*)`", section)
    assert len(named) >= 10, named
    missing = []
    for path, qualname in named:
        module = importlib.import_module(path[:-3].replace("/", "."))
        obj: object = module
        for part in qualname.split("."):
            if not hasattr(obj, part):
                missing.append(f"{path} {qualname}")
                break
            obj = getattr(obj, part)
    assert not missing, missing
    # and every Class.method named on its own resolves in one of the router/shard modules
    modules = [
        importlib.import_module(m)
        for m in (
            "router.core",
            "router.server",
            "router.links",
            "router.relay",
            "router.workers",
            "router.resources",
            "router.getwork",
            "shard.server",
            "shard.federated",
            "shard.store",
            "shard.scheduler",
            "federation.transport",
            "federation.client",
            "router.http",
        )
    ]
    for qualname in set(re.findall(r"`([A-Z]\w+\.[a-z_]\w*)`", section)):
        cls, attr = qualname.split(".")
        owners = [getattr(m, cls) for m in modules if hasattr(m, cls)]
        assert owners and any(hasattr(o, attr) for o in owners), qualname
