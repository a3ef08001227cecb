"""People at walking pace on a fixed camera: background subtraction proposes moving regions.

OpenCV's MOG2 learns each pixel's background over the frames of one video; what differs from
it (shadows excluded) is foreground. Per frame: a morphological opening drops noise, a tall
closing joins a person's head, trunk and legs, connected components become boxes, and boxes
too small, too flat or too thin for a standing person are dropped. The tracker
(`biofuse.tracking.track_persons`) then confirms people (three matches in a row) and follows
them, as it does HOG's detections; the boxes carry a score on HOG's SVM-margin scale so the
same thresholds apply (`CLEAN_SCORE` starts tracks, `WEAK_SCORE` only keeps them alive).

The subtractor is stateful over consecutive frames of one video, so one `BackgroundPersonPass`
runs per video, over the frames in time order, in the process that decodes them (the
pipeline's), never in a model actor that batches frames of many videos. It is cheap (a few ms
per frame) and its masks stay where the pixels are: each detection keeps its foreground mask,
cut to the padded box, for the gait silhouettes (CASIA-B's silhouettes were made the same way,
by background subtraction).

Warm-up: MOG2 would take the first frame, people and all, as background and leave ghosts
where they stood. The pass holds the first `warmup_frames` frames, starts the model from
their per-pixel median (people move, the street stays), then analyses them.

A moving camera (pan, shake, zoom) turns most of the frame into foreground; the pass then
says the frame is unusable (None) and the caller sends it to the HOG detector. Global motion
is a phase-correlation shift between consecutive frames (on a quarter-size grey image) above
`max_shift_px` in two frames running (until three are still), or a foreground fraction above
`max_foreground_fraction`. After the camera settles, the model
restarts (a fresh warm-up) before frames are trusted again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from biofuse.modalities.body.person_detect import FramePersons

Decided = tuple[float, np.ndarray, "FramePersons | None"]  # time, RGB frame, people or None

CLEAN_SCORE = 1.5  # a blob shaped like a standing person: may start a track (HOG scale)
WEAK_SCORE = 0.0  # a blob cut by the frame edge or oddly shaped: only extends a track
MASK_PAD = 0.15  # of the box height around the kept mask (BOX_PAD of body/silhouettes.py)


@dataclass
class PersonMask:
    """One detection's foreground, cut to its padded box: packed bits and the crop's origin."""

    origin: tuple[int, int]  # (x, y) of the crop in the frame
    shape: tuple[int, int]  # (h, w)
    bits: np.ndarray  # np.packbits of the (h, w) bool mask

    @classmethod
    def pack(cls, mask: np.ndarray, origin: tuple[int, int]) -> PersonMask:
        return cls(origin, (int(mask.shape[0]), int(mask.shape[1])), np.packbits(mask, axis=None))

    def unpack(self) -> np.ndarray:
        """(h, w) uint8 0/255, what OpenGait's pretreatment takes."""
        h, w = self.shape
        flat = np.unpackbits(self.bits, count=h * w)
        return (flat.reshape(h, w) * np.uint8(255)).astype(np.uint8)


class BackgroundPersonPass:
    """Per video: feed RGB frames in time order, get each frame's people (or None: use HOG).

    `feed` returns (time, frame, people or None) for the frames it could decide, in order
    (none during the warm-up, whose frames it holds); `finish` returns the rest. Every frame
    fed comes back exactly once. People are `FramePersons` whose `masks` hold each one's
    foreground (a `PersonMask`).
    """

    name = "opencv-mog2-people"

    def __init__(
        self,
        min_height_px: float = 64.0,
        history: int = 300,
        var_threshold: float = 16.0,
        warmup_frames: int = 30,
        max_foreground_fraction: float = 0.35,
        max_shift_px: float = 6.0,
        min_fill: float = 0.25,
        max_aspect: float = 0.6,
        min_aspect: float = 0.15,
        max_side_px: int = 400,
        close_width: int = 5,
        shadow_ratio: float = 0.5,
        learning_rate: float | None = None,
    ) -> None:
        # per frame; default 1/history. MOG2's own rate starts at 1/2 after our median start,
        # which learns the people of the first frames as background (and calls dark clothes
        # on grey road shadows): on vtest IDF1 0.476 with it, 0.587 at 1/300
        self.learning_rate = learning_rate if learning_rate is not None else 1.0 / history
        self.shadow_ratio = shadow_ratio
        self.close_width = close_width
        self.min_height_px = min_height_px  # the smallest person, as for HOG
        self.history = history
        self.var_threshold = var_threshold
        self.warmup_frames = warmup_frames
        self.max_foreground_fraction = max_foreground_fraction
        self.max_shift_px = max_shift_px  # full-resolution pixels between consecutive frames
        self.min_fill = min_fill  # foreground share of a box
        self.max_aspect = max_aspect  # width / height
        self.min_aspect = min_aspect
        self.max_side_px = max_side_px  # the subtractor works on frames this size at most
        self._scale = 1.0
        self._model: cv2.BackgroundSubtractorMOG2 | None = None
        self._pending: list[tuple[float, np.ndarray, np.ndarray]] = []  # time, small, frame
        self._previous_small: np.ndarray | None = None
        self._shifted_run = self._still_run = 0
        self._moving = False
        self.frames_background = 0
        self.frames_fallback = 0

    # -- the stream --------------------------------------------------------------------------

    def feed(self, time_s: float, image: np.ndarray) -> list[Decided]:
        moving = self._camera_moves(image)
        if moving:
            # the frames held so far (a still camera) are analysed with a background of their
            # own; the one learnt is void from here on: this frame goes to HOG, and the model
            # starts again once the camera has been still for a warm-up
            out = self.finish()
            self._model = None
            self.frames_fallback += 1
            return [*out, (time_s, image, None)]
        if self._model is None:
            self._pending.append((time_s, self._small(image), image))
            if len(self._pending) < self.warmup_frames:
                return []
            return self._start()
        return [(time_s, image, self._analyse(self._small(image), image.shape[:2]))]

    def finish(self) -> list[Decided]:
        """The frames still held (a video shorter than the warm-up)."""
        if not self._pending:
            return []
        if len(self._pending) < 3:  # too few frames for a median background: HOG decides
            out = [(t, im, None) for t, _, im in self._pending]
            self._pending.clear()
            self.frames_fallback += len(out)
            return out
        return self._start()

    def _start(self) -> list[Decided]:
        images = [im for _, im, _ in self._pending]
        median = np.median(np.stack(images[:: max(1, len(images) // 25)]), axis=0)
        self._model = cv2.createBackgroundSubtractorMOG2(
            history=self.history, varThreshold=self.var_threshold, detectShadows=True
        )
        self._model.setShadowThreshold(self.shadow_ratio)
        self._model.apply(median.astype(np.uint8), learningRate=1.0)
        out = [(t, im, self._analyse(sm, im.shape[:2])) for t, sm, im in self._pending]
        self._pending.clear()
        return out

    def _camera_moves(self, image: np.ndarray) -> bool:
        """Phase-correlation shift from the previous frame, in full-resolution pixels."""
        small = cv2.cvtColor(
            cv2.resize(image, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA),
            cv2.COLOR_RGB2GRAY,
        ).astype(np.float32)
        previous, self._previous_small = self._previous_small, small
        if previous is None or previous.shape != small.shape:
            return False
        window = cv2.createHanningWindow(small.shape[::-1], cv2.CV_32F)
        (dx, dy), response = cv2.phaseCorrelate(previous, small, window)
        shifted = response > 0.05 and 4.0 * float(np.hypot(dx, dy)) > self.max_shift_px
        # two frames in a row: people walking past jitter a single estimate (on vtest up to
        # 7 px once in 200 frames), a pan or a shake lasts; it ends after three still frames
        self._shifted_run = self._shifted_run + 1 if shifted else 0
        self._still_run = 0 if shifted else self._still_run + 1
        if self._shifted_run >= 2:
            self._moving = True
        elif self._still_run >= 3:
            self._moving = False
        return self._moving

    # -- one frame ---------------------------------------------------------------------------

    def foreground(self, small: np.ndarray) -> np.ndarray:
        """A frame's cleaned foreground (bool), at its working size; updates the model."""
        assert self._model is not None
        raw = self._model.apply(small, learningRate=self.learning_rate)
        fg = (raw > 200).astype(np.uint8)  # 255 foreground, 127 shadow
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        # a tall closing joins the parts of one person (head, trunk, legs) split by clothing
        # that matches the street, without merging people walking side by side
        tall = max(3, int(round(self.min_height_px * self._scale / 8)) | 1)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((tall, self.close_width), np.uint8))
        return fg.astype(bool)

    def _small(self, image: np.ndarray) -> np.ndarray:
        """The frame at the subtractor's working size (its cost grows with the area)."""
        self._scale = min(1.0, self.max_side_px / max(image.shape[:2]))
        if self._scale >= 1.0:
            return np.ascontiguousarray(image)
        return cv2.resize(image, None, fx=self._scale, fy=self._scale, interpolation=cv2.INTER_AREA)

    def _analyse(self, small: np.ndarray, shape: tuple[int, int]) -> FramePersons | None:
        fg = self.foreground(small)
        if fg.mean() > self.max_foreground_fraction:
            self.frames_fallback += 1
            return None  # lighting change or a camera move the shift missed
        self.frames_background += 1
        return self.people(fg, small.shape[0] / shape[0], shape)

    def people(
        self, fg: np.ndarray, scale: float = 1.0, frame_shape: tuple[int, int] | None = None
    ) -> FramePersons:
        """Connected components of a foreground mask -> person boxes, scores and masks.

        `fg` is at `scale` of the frame (`frame_shape`); boxes and masks come back at the
        frame's own resolution.
        """
        height, width = fg.shape
        full = frame_shape or (int(round(height / scale)), int(round(width / scale)))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), 8)
        boxes, scores, masks = [], [], []
        least = self.min_height_px * scale  # the smallest person, in fg pixels
        min_h = 0.5 * least
        for label in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[label])
            if h < min_h or area < 0.1 * min_h * min_h:
                continue
            aspect = w / h
            fill = area / (w * h)
            if aspect < self.min_aspect or fill < self.min_fill:
                continue
            edge = x <= 1 or y <= 1 or x + w >= width - 1 or y + h >= height - 1
            # the blob on its padded box only: a whole-frame comparison per blob costs more
            # than the subtractor
            pad = int(MASK_PAD * h) + 1
            ox, oy = max(0, x - pad), max(0, y - pad)
            local = labels[oy : min(height, y + h + pad), ox : min(width, x + w + pad)] == label
            blob = local[y - oy : y - oy + h, x - ox : x - ox + w]
            for x0, x1 in _split_wide(x, w, h, self.max_aspect, blob):
                clean = not edge and h >= 0.75 * least
                box = (x0 / scale, y / scale, x1 / scale, (y + h) / scale)
                boxes.append(box)
                scores.append(CLEAN_SCORE if clean else WEAK_SCORE)
                masks.append(_cut(local, (ox, oy), scale, box, full))
        return FramePersons(
            np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), masks
        )


def _cut(
    local: np.ndarray,
    origin: tuple[int, int],
    scale: float,
    box: Sequence[float],
    frame_shape: tuple[int, int],
) -> PersonMask:
    """A box's mask (frame pixels), padded, from the blob's region `local` (at `origin`, fg
    pixels at `scale` of the frame); resampled smoothly to the frame's resolution."""
    ox, oy = origin
    x0, y0, x1, y1 = box
    pad = MASK_PAD * (y1 - y0)
    cx0, cy0 = max(0, int(x0 - pad)), max(0, int(y0 - pad))
    cx1 = min(frame_shape[1], int(np.ceil(x1 + pad)))
    cy1 = min(frame_shape[0], int(np.ceil(y1 + pad)))
    # frame pixel (u, v) samples fg pixel (u * scale - ox, v * scale - oy)
    m = np.float32([[scale, 0, cx0 * scale - ox], [0, scale, cy0 * scale - oy]])
    src = local.astype(np.uint8) * np.uint8(255)
    crop = (
        cv2.warpAffine(
            src,
            m,
            (cx1 - cx0, cy1 - cy0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
        )
        > 127
    )
    # a split group: keep only this person's columns
    crop[:, : max(0, int(x0) - cx0)] = False
    crop[:, max(0, int(np.ceil(x1)) - cx0) :] = False
    return PersonMask.pack(crop, (cx0, cy0))


def _split_wide(
    x: int, w: int, h: int, max_aspect: float, blob: np.ndarray
) -> list[tuple[int, int]]:
    """Column ranges of the people in a blob wider than one person (a group side by side).

    Cut where the blob is thinnest (fewest foreground pixels per column) near each even split.
    """
    if w <= max_aspect * h:
        return [(x, x + w)]
    n = int(np.ceil(w / (0.5 * h)))
    n = max(2, min(n, 6))
    columns = blob.sum(axis=0)
    cuts = [0]
    for k in range(1, n):
        centre = int(k * w / n)
        lo, hi = max(cuts[-1] + 2, centre - w // (3 * n)), min(w - 2, centre + w // (3 * n))
        if hi <= lo:
            continue
        cuts.append(lo + int(np.argmin(columns[lo:hi])))
    cuts.append(w)
    return [(x + a, x + b) for a, b in zip(cuts[:-1], cuts[1:]) if b - a >= 3]
