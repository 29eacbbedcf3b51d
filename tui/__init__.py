"""``fedctl tui``: the federation's health in the terminal (Textual).

Entry point: :func:`tui.app.run` (``fedctl tui`` calls it; ``python -m tui`` too).
Reaches the federation only through the router, with :mod:`federation.transport`.
"""
