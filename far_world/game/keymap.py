"""Keyboard mapping derived from a checkpoint's action names.

Action names are '+'-joined tokens ("forward+left"); each token has a key, and the action
played is the one whose tokens best match the keys held down. Worlds with names we do not
know get number keys, so any checkpoint is playable.
"""

from __future__ import annotations

from dataclasses import dataclass

# pygame key names (pygame.key.key_code) for the movement vocabulary of our worlds.
TOKEN_KEYS: dict[str, str] = {
    "forward": "w",
    "move_forward": "w",
    "up": "w",
    "back": "s",
    "backward": "s",
    "move_backward": "s",
    "down": "s",
    "move_up": "w",
    "move_down": "s",
    "left": "a",
    "turn_left": "a",
    "move_left": "a",
    "right": "d",
    "turn_right": "d",
    "move_right": "d",
    "jump": "space",
    "attack": "j",
    "do": "j",
    "use": "e",
    "sneak": "left shift",
    "sprint": "left ctrl",
    "camera_left": "left",
    "camera_right": "right",
    "camera_up": "up",
    "camera_down": "down",
}
NOOP_NAMES = {"noop", "none", "idle", "no_op"}
NUMBER_KEYS = [str(i) for i in range(1, 10)] + ["0"] + list("zxcvbnm,.")


@dataclass
class KeyMap:
    action_names: list[str]
    tokens: list[frozenset[str]]  # per action: the keys that select it
    noop: int

    def action_for(self, pressed: set[str]) -> int:
        """The action whose key set is the largest subset of the keys held down (noop if none)."""
        best, best_size = self.noop, 0
        for index, keys in enumerate(self.tokens):
            if keys and keys <= pressed and len(keys) > best_size:
                best, best_size = index, len(keys)
        return best

    @property
    def keys(self) -> set[str]:
        return set().union(*self.tokens)

    def legend(self) -> list[str]:
        """One line per action, e.g. 'w+a  forward+left'."""
        return [
            f"{'+'.join(sorted(keys)) or '(none)':<10} {name}"
            for name, keys in zip(self.action_names, self.tokens, strict=True)
        ]


def build_keymap(action_names: list[str]) -> KeyMap:
    """Map each action to a key combination; unknown names get their own number key."""
    spare = iter(NUMBER_KEYS)
    tokens: list[frozenset[str]] = []
    noop = 0
    for index, name in enumerate(action_names):
        lowered = name.lower()
        if lowered in NOOP_NAMES:
            noop = index
            tokens.append(frozenset())
            continue
        parts = [p.strip() for p in lowered.replace(" ", "_").split("+")]
        if all(p in TOKEN_KEYS for p in parts):
            keys = frozenset(TOKEN_KEYS[p] for p in parts)
            if keys not in tokens:
                tokens.append(keys)
                continue
        try:
            tokens.append(frozenset({next(spare)}))
        except StopIteration:
            raise ValueError(f"too many actions ({len(action_names)}) to map to keys") from None
    return KeyMap(list(action_names), tokens, noop)
