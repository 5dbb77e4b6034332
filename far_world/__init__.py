"""far-world: a FAR (Frame AutoRegressive) world model you can play and train agents in."""

__version__ = "0.1.0"
