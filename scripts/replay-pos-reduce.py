#!/usr/bin/env python3
# Host replay of the chunked pos_reduce / pos_combine index math (kernels/backward_sorted.cu),
# written for issue 17 without a GPU; needs numpy; not run in CI (about a minute).
# For random shapes, simulate every block of both launches with the kernel's formulas and check
# (1) every valid row (b, t) lands in exactly one partial and in the right position row,
# (2) the result equals float32 in-order chunk sums combined in chunk order,
# (3) the result does not depend on launch geometry (cb / threads) -- only kPosChunk.
import numpy as np, random
K, kBatch = 64, 4
def replay(B, T, D, P, offset, store, N, cb, dout, valid, grad0):
    chunks = (B + K - 1) // K
    partial = np.full((chunks * T, D), np.nan, np.float32)
    touched = np.zeros((B, T), int)
    for blk in range(chunks * T):
        for by in range((D + cb - 1) // cb):
            t = blk % T; b0 = blk // T * K; b1 = min(b0 + K, B)
            c0 = by * cb; npk = min(cb, D - c0) // N
            for pk in range(npk):
                col = c0 + pk * N
                acc = np.zeros(N, np.float32)
                b = b0
                while b < b1:
                    for u in range(kBatch):
                        if b + u < b1:
                            r = (b + u) * T + t
                            if valid[r]:
                                if pk == 0 and by == 0: touched[b + u, t] += 1
                                acc = (acc + dout[r, col:col + N]).astype(np.float32)
                    b += kBatch
                partial[blk, col:col + N] = acc
    g = grad0.copy()
    pos_rows = P if store else T
    for bx in range(pos_rows):
        for by in range((D + cb - 1) // cb):
            q = bx + (0 if store else offset); t = q - offset
            c0 = by * cb; npk = min(cb, D - c0) // N
            outside = t < 0 or t >= T
            for pk in range(npk):
                col = c0 + pk * N
                acc = np.zeros(N, np.float32)
                if not outside:
                    for c in range(chunks):
                        acc = (acc + partial[c * T + t, col:col + N]).astype(np.float32)
                if store: g[q, col:col + N] = acc + np.float32(0)
                else: g[q, col:col + N] = (g[q, col:col + N] + acc).astype(np.float32)
    return g, touched
random.seed(1)
errors = 0
for it in range(300):
    B = random.choice([65, 100, 128, 129, 200, 257, random.randint(65, 400)])
    T = random.randint(1, 4); N = random.choice([1, 4, 8]); D = N * random.randint(1, 5)
    P = T + random.randint(0, 5); offset = random.randint(0, P - T); store = random.random() < .5
    dout = np.random.standard_normal((B * T, D)).astype(np.float32) * np.float32(1e3)
    valid = np.random.random(B * T) > 0.1
    grad0 = np.random.standard_normal((P, D)).astype(np.float32)
    res = []
    for cb in {N, D}:  # two launch geometries
        g, touched = replay(B, T, D, P, offset, store, N, cb, dout, valid, grad0)
        res.append(g)
        assert (touched == valid.reshape(B, T)).all(), "row coverage"
    # the workspace bound of make_layout (pos_partial_rows) covers chunks x T for every split
    # of the same B x T rows
    N = B * T
    for b in range(1, N + 1):
        if N % b == 0 and b > K:
            assert ((b + K - 1) // K) * (N // b) <= (2 * N + K - 1) // K, (b, N)
    # expected: in-order chunk sums, combined in chunk order
    exp = grad0.copy() if not store else np.zeros_like(grad0)
    for t in range(T):
        tot = np.zeros(D, np.float32)
        for c in range((B + K - 1) // K):
            s = np.zeros(D, np.float32)
            for b in range(c * K, min(c * K + K, B)):
                if valid[b * T + t]: s = (s + dout[b * T + t]).astype(np.float32)
            tot = (tot + s).astype(np.float32)
        exp[offset + t] = (exp[offset + t] + tot).astype(np.float32) if not store else tot + np.float32(0)
    for g in res:
        if not np.array_equal(g.view(np.uint32), exp.view(np.uint32)): errors += 1
    if not np.array_equal(res[0].view(np.uint32), res[-1].view(np.uint32)): errors += 1
print("cases", 300, "errors", errors)
