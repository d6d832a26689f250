"""The per-step exchange between the composer and a policy host, as flat float64 arrays (no ROS here).

Each message is ONE ``std_msgs/Float64MultiArray``: the first ``HEADER_SLOTS`` values of ``data`` are a fixed
header (``layout.data_offset = HEADER_SLOTS``, the padding the message type provides), followed by the tensor
``(rows, horizon, action_dim)`` row-major (``layout.dim`` names and sizes it). Every header value is an integer
below 2**53 or a float, so float64 carries it exactly; a float32 tensor also crosses exactly (float32 -> float64 ->
float32 is the identity), which is why the two deployments give bit-identical chunks. docs/protocol.md is the
reference; this module is the only code that knows the slot order.

Request (composer -> host, ``/gpc/hosts/<name>/request``):

====  ==================  ============================================================================
slot  name                meaning
====  ==================  ============================================================================
0     kind                1 = encode (once per chunk), 2 = predict (once per denoising step)
1     correlation_id      the chunk attempt this belongs to (the composer's counter, >= 1)
2     step                denoising step index 0..N-1 (-1 for encode)
3     parent_time         the parent's OWN timestep for this step (NaN for encode)
4, 5  stamp_sec, _nsec    encode: the observation time the composer names (ROS clock);
                          predict: the stamp of the observation the host encoded (echoed)
6     dtype_bits          32 or 64: the dtype the composer samples in (the tensor is cast back to it)
7     batch               B observations (encode) or M rows (predict)
====  ==================  ============================================================================

Reply (host -> composer, ``/gpc/hosts/<name>/reply``): the same slots, with slot 3 = ``status`` (one of
``STATUS``) instead of the parent time, slots 4, 5 = stamp of the newest frame in the window the host encoded,
and the prediction ``(M, H, D)`` as the tensor (empty for encode replies and failures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HEADER_SLOTS = 8
KIND_ENCODE, KIND_PREDICT = 1, 2
DTYPE_BITS = {32: np.float32, 64: np.float64}

#: Reply status codes (slot 3 of a reply).
STATUS = {0: "ok", 1: "no observation", 2: "unknown correlation id", 3: "non-finite prediction", 4: "host error"}
OK, NO_OBSERVATION, UNKNOWN_CORRELATION, NON_FINITE, HOST_ERROR = range(5)


def split_stamp(stamp_s: float) -> tuple[int, int]:
    """Seconds (float) -> (sec, nanosec)."""
    sec = math.floor(stamp_s)
    nsec = round((stamp_s - sec) * 1e9)
    if nsec >= 1_000_000_000:
        sec, nsec = sec + 1, nsec - 1_000_000_000
    return sec, nsec


@dataclass(frozen=True)
class Exchange:
    """One request or reply: the header fields and the tensor (``(rows, H, D)`` or ``(0, 0, 0)``)."""

    kind: int
    correlation_id: int
    step: int
    value: float
    """Request: the parent time (NaN for encode). Reply: the status code."""
    stamp_sec: int
    stamp_nsec: int
    dtype_bits: int
    batch: int
    tensor: np.ndarray

    @property
    def stamp_s(self) -> float:
        """The observation stamp in seconds."""
        return self.stamp_sec + self.stamp_nsec * 1e-9

    @property
    def status(self) -> int:
        """The reply status code (``value`` as an int; see ``STATUS``)."""
        return int(self.value)

    def pack(self) -> np.ndarray:
        """Header + tensor as one flat float64 array."""
        tensor = np.asarray(self.tensor)
        flat = np.empty(HEADER_SLOTS + tensor.size, dtype=np.float64)
        flat[:HEADER_SLOTS] = (self.kind, self.correlation_id, self.step, self.value, self.stamp_sec,
                               self.stamp_nsec, self.dtype_bits, self.batch)
        flat[HEADER_SLOTS:] = tensor.reshape(-1)
        return flat

    @classmethod
    def unpack(cls, flat: np.ndarray, shape: tuple[int, ...]) -> Exchange:
        """Inverse of :meth:`pack`; ``shape`` is the tensor's shape from the message layout."""
        flat = np.asarray(flat, dtype=np.float64)
        if flat.size < HEADER_SLOTS:
            raise ValueError(f"exchange message has {flat.size} values; the header alone needs {HEADER_SLOTS}")
        head = flat[:HEADER_SLOTS]
        bits = int(head[6])
        if bits not in DTYPE_BITS:
            raise ValueError(f"exchange dtype_bits must be one of {sorted(DTYPE_BITS)}; got {bits}")
        body = flat[HEADER_SLOTS:]
        if int(np.prod(shape)) != body.size:
            raise ValueError(f"exchange tensor has {body.size} values; its layout says {tuple(shape)}")
        return cls(int(head[0]), int(head[1]), int(head[2]), float(head[3]), int(head[4]), int(head[5]), bits,
                   int(head[7]), body.reshape(shape).astype(DTYPE_BITS[bits]))


def encode_request(correlation_id: int, observation_time_s: float, dtype_bits: int, batch: int = 1) -> Exchange:
    """An encode request for chunk ``correlation_id`` at ``observation_time_s`` (s), with an empty tensor."""
    sec, nsec = split_stamp(observation_time_s)
    return Exchange(KIND_ENCODE, correlation_id, -1, math.nan, sec, nsec, dtype_bits, batch,
                    np.zeros((0, 0, 0)))


def predict_request(correlation_id: int, step: int, parent_time: float, stamp: tuple[int, int],
                    x_t: np.ndarray) -> Exchange:
    """A predict request: step ``step`` of chunk ``correlation_id`` at ``parent_time`` on ``x_t`` ``(B, H, D)``.

    The dtype bits (32 or 64) and the batch size come from ``x_t``; ``stamp`` is the observation's ``(sec, nanosec)``.
    """
    bits = 32 if x_t.dtype == np.float32 else 64
    return Exchange(KIND_PREDICT, correlation_id, step, float(parent_time), stamp[0], stamp[1], bits,
                    int(x_t.shape[0]), x_t)


def reply(request: Exchange, status: int, stamp: tuple[int, int] = (0, 0), tensor: np.ndarray | None = None
          ) -> Exchange:
    """The reply to ``request`` with ``status``, the encoded observation's ``stamp`` and the prediction."""
    body = np.zeros((0, 0, 0)) if tensor is None else tensor
    return Exchange(request.kind, request.correlation_id, request.step, float(status), stamp[0], stamp[1],
                    request.dtype_bits, request.batch, body)
