"""The pieces of the pygame front end that need no window: key mapping, recording, agents."""
