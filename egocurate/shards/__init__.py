"""Training shards: writing them, and streaming them resumably into PyTorch."""

from egocurate import lazy_exports

_EXPORTS = {
    "write_shards": "egocurate.shards.write",
    "ShardParams": "egocurate.shards.write",
    "ShardDataset": "egocurate.shards.stream",
    "DreamDojoSample": "egocurate.shards.dreamdojo_sample",
    "read_manifest": "egocurate.shards.manifest",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
