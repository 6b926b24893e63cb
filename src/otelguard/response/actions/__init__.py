"""Response actions: each one plans a change without side effects, applies it, and reverts it.

The contract is :class:`otelguard.response.actions.base.Action`; ``REGISTRY`` in
``registry.py`` names every action a ``ResponsePolicy`` may use.
"""
