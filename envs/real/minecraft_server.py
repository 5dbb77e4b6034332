"""The Minecraft game process: drives Minecraft Indev (``minecraft-python``) for one episode.

Run by :class:`far_world.envs.real.minecraft_world.MinecraftWorld` in the game's own interpreter
(Python 3.11, numpy<2; see ``envs/real/minecraft_venv.py``), never imported by the project:

    GAME_PYTHON minecraft_server.py '{"width": 64, "height": 64}'

It starts the game headless, answers READY, waits for one seed, generates that level, then
steps it until told to quit or its stdin closes. Messages: ``minecraft_protocol.py``.

One episode a process: a few of the game's random generators and animation counters (the
process-wide generator of water animation and particles, the cloud offset, the fog colour)
carry over from one level to the next and cannot be reset, so a second level in the same
process differs in about 2% of its pixels. A fresh process replays bit for bit.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import minecraft_protocol as protocol  # noqa: E402

M_PERTURB = -6
SETTLE_TICKS = 60  # after a level is made the player lands and the fog colour fades in (~50 ticks)
LEVEL_ATTEMPTS = 4
UNITS_PER_DEGREE = 1 / 0.15  # Entity.turn: one unit of mouse motion turns 0.15 degrees
KEYS_OF = {"forward": "W", "back": "S", "left": "A", "right": "D", "jump": "SPACE"}


def zero_fresh_allocations() -> None:
    """Make every malloc return zeroed memory (glibc's M_PERTURB with 0xFF: its complement, 0).

    The game's Cython level generator reads its malloc'd block array before writing all of
    it; garbage there crashes generation or leaves stray blocks, differently from run to run.
    """
    if ctypes.CDLL(None).mallopt(M_PERTURB, 0xFF) != 1:
        raise RuntimeError("mallopt(M_PERTURB) failed: level generation would not be reproducible")


class SeededClock:
    """Stands in for ``time.perf_counter_ns``, from which every game ``Random()`` takes its seed.

    Each call returns the next value of a counter, so the generators get distinct, reproducible
    seeds; :meth:`restart` moves the counter to a block that depends on the episode seed.
    """

    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        self.value += 1
        return self.value

    def restart(self, seed: int) -> None:
        self.value = (seed + 1) << 20


def bracket_inside_block_view(entity_renderer_module) -> None:
    """Fix the port's view from inside a solid block (a block placed or fallen onto the head).

    EntityRenderer then draws the surrounding blocks with ``RenderBlocks.renderBlockAllFaces``,
    which adds vertices without starting or ending a draw; the next draw of the frame fails with
    "OMG ALREADY VERTICES!". Each block is drawn in a draw of its own instead.
    """
    render_blocks, tessellator = entity_renderer_module.RenderBlocks, entity_renderer_module.tessellator

    class InsideBlockRenderer:
        def __init__(self, tess, world) -> None:
            self.blocks = render_blocks(tess, world)

        def renderBlockAllFaces(self, block, x: int, y: int, z: int) -> None:  # noqa: N802 (the game's name)
            tessellator.startDrawingQuads()
            self.blocks.renderBlockAllFaces(block, x, y, z)
            tessellator.draw()

    entity_renderer_module.RenderBlocks = InsideBlockRenderer


class Game:
    """The game's own classes, driven tick by tick with no event loop."""

    def __init__(self, width: int, height: int, clock: SeededClock) -> None:
        import numpy as np
        import pyglet

        pyglet.options["headless"] = True  # EGL on Mesa's software renderer: no X server
        pyglet.options["shadow_window"] = False
        from pyglet import gl

        import mc
        from mc.net.minecraft.client import MinecraftError
        from mc.net.minecraft.client.Minecraft import Minecraft
        # After Minecraft: importing the renderer first runs into the game's import cycle.
        from mc.net.minecraft.client.render import EntityRenderer as entity_renderer_module
        from mc.net.minecraft.game.item.ItemStack import ItemStack
        from mc.net.minecraft.game.level.block.Blocks import blocks

        pyglet.options["audio"] = ("silent",)  # the game's import asks for OpenAL first
        # The game looks for its textures relative to the main script: point it at the package.
        pyglet.resource.path = [os.path.join(os.path.dirname(mc.__file__), "resources")]
        pyglet.resource.reindex()
        bracket_inside_block_view(entity_renderer_module)

        self.np, self.gl, self.key = np, gl, pyglet.window.key
        self.clock = clock
        self.width, self.height = width, height
        self.placed_block = lambda: ItemStack(blocks.dirt)  # what "use" places, as in MineRL's navigate
        self.ground = {blocks.grass.blockID, blocks.dirt.blockID, blocks.sand.blockID, blocks.gravel.blockID,
                       blocks.stone.blockID}
        game = Minecraft(False, True, width=width, height=height, resizable=False, vsync=False, visible=False)

        def stop_after_setup() -> None:
            raise MinecraftError()

        # run() sets up GL, textures and options, then loops: stop it at its first event poll,
        # and skip the level it would generate (ours comes with a seed).
        game.dispatch_events = stop_after_setup
        game.generateNewLevel = lambda *args: None
        game.run()
        del game.generateNewLevel, game.dispatch_events
        game.isGamePaused = False  # paused, the world does not tick
        options = game.options
        options.viewBobbing = False
        options.limitFramerate = False
        options.renderDistance = 0
        game.ingameGUI.renderGameOverlay = lambda alpha: None  # no HUD in the frames
        # No mobs: creative mode spawns them, and nothing in a 64x64 frame should chase the player.
        controller = game.playerController
        controller.onWorldChange = lambda world: setattr(world, "survivalWorld", False)
        controller.onUpdate = lambda: None
        self.game = game
        self.tick = game._Minecraft__runTick
        self.click = game._Minecraft__clickMouse
        self.pixels = (ctypes.c_ubyte * (width * height * 3))()

    def new_level(self, seed: int) -> None:
        """Generate the level of ``seed`` (128x128 blocks, inland); a failure retries with a derived seed."""
        for attempt in range(LEVEL_ATTEMPTS):
            self.clock.restart((seed + attempt * 0x3C6EF372) & 0x7FFFFFFF)
            try:
                self.game.generateNewLevel(0, 0, 0, 0)
                break
            except (ValueError, IndexError, MemoryError):
                if attempt == LEVEL_ATTEMPTS - 1:
                    raise
                print(f"level generation failed for seed {seed} (attempt {attempt + 1}), retrying:\n"
                      f"{traceback.format_exc()}", file=sys.stderr)
        world = self.game.theWorld
        if (world.width, world.length) != (protocol.LEVEL_SIZE, protocol.LEVEL_SIZE):
            raise RuntimeError(f"expected a {protocol.LEVEL_SIZE}-block level, got {world.width}x{world.length}")
        self.move_to_dry_land(seed)
        self.hotbar = self.game.thePlayer.inventory.mainInventory
        self.hotbar[0] = self.placed_block()
        self.game.thePlayer.inventory.currentItem = 0
        for _ in range(SETTLE_TICKS):
            self.tick()

    def move_to_dry_land(self, seed: int) -> None:
        """Respawn the player on open, level ground, facing a random way.

        The game's own spawn search compares heights with a water level that its generator
        leaves at 0, so a level often starts on the bottom of a lake or in a pit; and it always
        faces the same way (yaw 0). Here the ground must be dry and the 5x5 columns around it
        within one block of its height, so that the player can walk off in any direction.
        """
        world, player = self.game.theWorld, self.game.thePlayer
        rng = random.Random(seed)
        for _ in range(20_000):
            x = rng.randrange(world.width // 8, world.width * 7 // 8)
            z = rng.randrange(world.length // 8, world.length * 7 // 8)
            y = world.getMapHeight(x, z)
            around = [world.getMapHeight(x + dx, z + dz) for dx in range(-2, 3) for dz in range(-2, 3)]
            if 0 < y < world.height - 2 and max(around) - min(around) <= 1 \
               and world.getBlockId(x, y - 1, z) in self.ground \
               and world.getBlockId(x, y, z) == 0 and world.getBlockId(x, y + 1, z) == 0:
                world.setSpawnLocation(x, y, z, rng.uniform(-180.0, 180.0))
                player.preparePlayerToSpawn()
                return
        raise RuntimeError(f"level {seed} has no open dry ground to stand on")

    def act(self, name: str) -> None:
        """Hold the action's keys for ``FRAME_SKIP`` ticks; camera, attack and use happen first."""
        player = self.game.thePlayer
        held = set(name.split("+")) if name != "noop" else set()
        movement = player.movementInput
        for part, key in KEYS_OF.items():
            movement.checkKeyForMovementInput(getattr(self.key, key), part in held)
        if "camera_left" in held or "camera_right" in held:
            sign = 1 if "camera_right" in held else -1
            player.turn(sign * protocol.CAMERA_STEP_DEG * UNITS_PER_DEGREE, 0.0)
        if "camera_up" in held or "camera_down" in held:
            sign = 1 if "camera_down" in held else -1  # positive pitch looks down
            target = max(-protocol.PITCH_LIMIT_DEG,
                         min(protocol.PITCH_LIMIT_DEG, player.rotationPitch + sign * protocol.CAMERA_STEP_DEG))
            player.turn(0.0, (player.rotationPitch - target) * UNITS_PER_DEGREE)
        # Clicks act on the block under the crosshair of the frame the agent last saw.
        if "attack" in held:
            self.click(0)
        if "use" in held:
            self.click(1)
            if self.hotbar[0] is None or self.hotbar[0].stackSize < 1:
                self.hotbar[0] = self.placed_block()  # an endless stack: placing empties it
        for _ in range(protocol.FRAME_SKIP):
            self.tick()

    def observe(self) -> bytes:
        """Render the current view: a FRAME reply with the pose."""
        gl = self.gl
        gl.glEnable(gl.GL_TEXTURE_2D)
        self.game.entityRenderer.updateCameraAndRender(1.0)
        gl.glFinish()
        gl.glReadPixels(0, 0, self.width, self.height, gl.GL_RGB, gl.GL_UNSIGNED_BYTE, self.pixels)
        # OpenGL's first row is the bottom one.
        frame = self.np.frombuffer(self.pixels, self.np.uint8).reshape(self.height, self.width * 3)[::-1]
        p = self.game.thePlayer
        pose = (p.posX, p.posY, p.posZ, p.rotationYaw, p.rotationPitch)
        return protocol.encode_frame(tuple(float(v) for v in pose), frame.tobytes())


def read_command(stream) -> tuple[bytes, int]:
    data = stream.read(protocol.COMMAND.size)
    if len(data) < protocol.COMMAND.size:
        return protocol.CMD_CLOSE, 0  # the env went away
    return protocol.COMMAND.unpack(data)


def serve(settings: dict, replies, commands) -> None:
    zero_fresh_allocations()
    clock = SeededClock()
    time.perf_counter_ns = clock  # before the game's import: its module-level Random seeds from it
    game = Game(int(settings["width"]), int(settings["height"]), clock)
    replies.write(protocol.encode_reply(protocol.REPLY_READY, json.dumps(settings).encode()))
    kind, seed = read_command(commands)
    if kind == protocol.CMD_CLOSE:
        return
    if kind != protocol.CMD_RESET:
        raise RuntimeError(f"expected a reset first, got command {kind!r}")
    game.new_level(seed)
    replies.write(game.observe())
    while True:
        kind, argument = read_command(commands)
        if kind == protocol.CMD_CLOSE:
            return
        if kind != protocol.CMD_STEP:
            raise RuntimeError(f"one episode a process: got command {kind!r} after the reset")
        if not 0 <= argument < len(protocol.ACTIONS):
            raise ValueError(f"action {argument} outside 0..{len(protocol.ACTIONS) - 1}")
        game.act(protocol.ACTIONS[argument])
        replies.write(game.observe())


def main() -> int:
    settings = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {"width": 64, "height": 64}
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # the game prints as it goes: keep that off the reply pipe
    try:
        serve(settings, replies, sys.stdin.buffer)
        return 0
    except BaseException:
        try:
            replies.write(protocol.encode_reply(protocol.REPLY_ERROR, traceback.format_exc().encode()))
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
