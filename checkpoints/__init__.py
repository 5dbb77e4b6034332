"""The released worlds, installed as package data of ``far_world.checkpoints``.

This folder is a package only so that ``importlib.resources`` finds its ``*.pt`` files in a
wheel install and in an editable one alike; ``far_world.released`` is the code that reads it.
"""
