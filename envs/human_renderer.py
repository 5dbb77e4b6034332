"""A minimal pygame window for render_mode="human"."""

from __future__ import annotations

import numpy as np


class HumanRenderer:
    def __init__(self, title: str, frame_hw: tuple[int, int], scale: int = 6) -> None:
        import pygame

        self._pygame = pygame
        pygame.init()
        self.size = (frame_hw[1] * scale, frame_hw[0] * scale)
        self.screen = pygame.display.set_mode(self.size)
        pygame.display.set_caption(title)
        self.clock = pygame.time.Clock()

    def show(self, frame: np.ndarray, fps: int) -> None:
        pg = self._pygame
        pg.event.pump()
        surface = pg.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))
        self.screen.blit(pg.transform.scale(surface, self.size), (0, 0))
        pg.display.flip()
        self.clock.tick(fps)

    def close(self) -> None:
        self._pygame.display.quit()
