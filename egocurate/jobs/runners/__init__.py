"""The engines (local, Ray, Spark) and the one error they raise for the person running them."""


class EngineError(RuntimeError):
    """An engine cannot do the work: unreachable cluster, a stage no node can hold, no progress.

    The message is one line saying what is needed and what exists; the CLI prints it as ``error: ...``.
    """
