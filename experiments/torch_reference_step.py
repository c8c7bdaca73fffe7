"""A PyTorch reference of the NeuFace update step, for same-run speed comparisons.

Our own PyTorch script (no code from the authors' release) performing the update the released
NeuFace code performs per chunk: a ResNet-50 (torchvision layout, frozen BatchNorm, 224² crops)
forward and backward on frames × views images, a head 2048 → 1024 → 236 (DECA's output vector), a
FLAME-sized model (5,023 vertices, 300 identity + 100 expression components, 5-joint linear blend
skinning with pose correctives; random arrays in FLAME's layout), 68 landmarks by barycentric
interpolation, weak-perspective projection, the reference losses (10 · landmark L1 + 100 · temporal
head-rotation smoothness + 200 · multi-view bootstrapping over 5 sampled frames when there are
several views) and an Adam step. Two modes:

* ``released``: autograd anomaly detection on (``torch.autograd.set_detect_anomaly(True)``), as the
  released code leaves it;
* ``tuned``: anomaly detection off (what a user tuning the released code would do first).

``--trainable_stages=K`` freezes all but the last K backbone stages as the JAX option does (the
frozen prefix computed once, outside the timed loop).

It runs in a separate virtual environment with torch (torch is never a dependency of this
project), so it uses argparse and imports only the standard library, numpy, torch and the PyTorch
encoder layout of ``make_torch_encoder_fixtures.py`` beside it::

    /tmp/torchvenv/bin/python experiments/torch_reference_step.py --frames=20 --views=1 --mode=tuned

``experiments/benchmark_step.py --torch_python=/tmp/torchvenv/bin/python`` calls it; the last
stdout line is one JSON object (median wall and CPU seconds per update over --steps timed updates
after --warmup, peak RSS, settings). CPU seconds (all threads) are the robust figure on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--views", type=int, default=1)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--mode", choices=("released", "tuned"), default="released")
    p.add_argument("--steps", type=int, default=3, help="timed updates (the median is reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--trainable_stages", type=int, default=5, help="backbone stages optimized (5 = all)")
    p.add_argument("--channels_last", action="store_true", help="NHWC memory format")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per_stage", action="store_true", help="time each backbone stage alone (forward; forward + "
                   "backward to its weights and input) and the whole encoder, on --frames x --views images")
    return p.parse_args()


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: reset at exec, unlike ru_maxrss, which a child
    started by a large parent inherits)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(args):
    """DECA's coarse encoder in PyTorch (the layout mirror of make_torch_encoder_fixtures.py at full
    size: ResNet-50 trunk, head 2048 → 1024 → 236), as (stages, head) with frozen BatchNorm and the
    first ``5 - trainable_stages`` stages frozen."""
    import torch
    from torch import nn

    from make_torch_encoder_fixtures import FULL, N_OUT, RegressionEncoder

    enc = RegressionEncoder(FULL["widths"], FULL["blocks"], FULL["hidden"], N_OUT)
    trunk, head = enc.encoder, enc.layers
    nn.init.zeros_(head[2].weight)
    stem = nn.Sequential(trunk.conv1, trunk.bn1, nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    stages = nn.ModuleList([stem, trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4])
    net = nn.ModuleDict({"stages": stages, "head": head})
    net.eval()  # frozen BatchNorm: running statistics
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            for p in m.parameters():
                p.requires_grad_(False)
    frozen = 5 - args.trainable_stages
    for s in stages[:frozen]:
        for p in s.parameters():
            p.requires_grad_(False)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net, frozen


class Flame:
    """FLAME-sized linear model with 5-joint skinning (random contents in FLAME's layout)."""

    def __init__(self, g):
        import torch

        v, n_shape, n_expr, j = 5023, 300, 100, 5
        self.template = torch.randn(v, 3, generator=g) * 0.05
        self.dirs = torch.randn(n_shape + n_expr, v * 3, generator=g) * 1e-3
        self.posedirs = torch.randn(36, v * 3, generator=g) * 1e-3
        self.regressor = torch.softmax(torch.randn(j, v, generator=g), dim=1)
        w = torch.softmax(torch.randn(v, j, generator=g) * 3, dim=1)
        self.weights = w
        self.parents = [-1, 0, 1, 1, 1]
        faces = torch.randint(0, v, (9976, 3), generator=g)
        self.faces = faces
        self.lmk_faces = torch.randint(0, 9976, (68,), generator=g)
        b = torch.rand(68, 3, generator=g)
        self.lmk_bary = b / b.sum(1, keepdim=True)
        self.n_shape, self.n_expr = n_shape, n_expr

    @staticmethod
    def rodrigues(r):
        import torch

        angle = torch.sqrt((r * r).sum(-1, keepdim=True) + 1e-8)
        k = r / angle
        kx, ky, kz = k.unbind(-1)
        zero = torch.zeros_like(kx)
        K = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(r.shape[:-1] + (3, 3))
        eye = torch.eye(3).expand_as(K)
        s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
        return eye + s * K + (1 - c) * (K @ K)

    def forward(self, shape, expr, pose):
        """shape [B, 300], expr [B, 100], pose [B, 15] → vertices [B, V, 3], joints [B, 5, 3]."""
        import torch

        b = shape.shape[0]
        coeffs = torch.cat([shape, expr], -1)
        v_shaped = self.template + (coeffs @ self.dirs).reshape(b, -1, 3)
        joints = torch.einsum("jv,bvc->bjc", self.regressor, v_shaped)
        rot = self.rodrigues(pose.reshape(b, 5, 3))
        pose_feat = (rot[:, 1:] - torch.eye(3)).reshape(b, 36)
        v_posed = v_shaped + (pose_feat @ self.posedirs).reshape(b, -1, 3)
        rel = joints.clone()
        rel[:, 1:] = joints[:, 1:] - joints[:, self.parents[1:]]
        transforms = []
        for i in range(5):
            t = torch.cat([torch.cat([rot[:, i], rel[:, i, :, None]], -1),
                           torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(b, 1, 4)], 1)
            transforms.append(t if i == 0 else transforms[self.parents[i]] @ t)
        g = torch.stack(transforms, 1)
        posed_joints = g[:, :, :3, 3]
        g_rel = g.clone()
        g_rel[:, :, :3, 3] = g[:, :, :3, 3] - (g[:, :, :3, :3] @ joints[..., None])[..., 0]
        a = torch.einsum("vj,bjmn->bvmn", self.weights, g_rel)
        verts = (a[..., :3, :3] @ v_posed[..., None])[..., 0] + a[..., :3, 3]
        return verts, posed_joints

    def landmarks(self, verts):
        tri = verts[:, self.faces[self.lmk_faces]]  # [B, 68, 3, 3]
        return (tri * self.lmk_bary[None, :, :, None]).sum(2)


def quaternion(r):
    import torch

    angle = torch.sqrt((r * r).sum(-1, keepdim=True) + 1e-8)
    return torch.cat([torch.cos(angle / 2), torch.sin(angle / 2) * r / angle], -1)


def losses(flame, raw, target, c, w, g):
    """The reference loss of one chunk [c frames, w views] from the raw encoder outputs."""
    import torch

    b = raw.shape[0]
    shape = raw[:, :100].mean(0, keepdim=True).expand(b, 100)
    expr = raw[:, 150:200]
    pose = torch.zeros(b, 15)
    pose = torch.cat([raw[:, 200:203], pose[:, 3:6], raw[:, 203:206], pose[:, 9:15]], -1)
    cam = raw[:, 206:209]
    full_shape = torch.cat([shape, torch.zeros(b, 200)], -1)
    full_expr = torch.cat([expr, torch.zeros(b, 50)], -1)
    verts, joints = flame.forward(full_shape, full_expr, pose)
    lmk = flame.landmarks(verts)
    proj = cam[:, None, :1] * (lmk[..., :2] + cam[:, None, 1:])
    total = 10.0 * (proj - target).abs().mean()
    # Temporal: each frame's head-rotation quaternion against the mean of a 3-frame window.
    q = quaternion(raw[:, 200:203]).reshape(c, w, 4)
    padded = torch.cat([q[:1], q, q[-1:]], 0)
    avg = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
    total = total + 100.0 * ((q - avg) ** 2).mean(dim=(0, 2)).sum()
    if w > 1:
        idx = torch.randperm(c, generator=g)[:5]
        vv = verts.reshape(c, w, -1, 3)[idx]
        root = joints.reshape(c, w, 5, 3)[idx][:, :, :1]
        rot = Flame.rodrigues(raw[:, 200:203].reshape(c, w, 3)[idx])
        canon = (vv - root) @ rot + root
        f = flame.faces
        tri = vv[:, :, f]  # [5, w, F, 3, 3]
        fn = torch.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
        vn = torch.zeros_like(vv).index_add_(2, f.reshape(-1), fn.repeat_interleave(3, dim=2))
        vn = vn / (vn.norm(dim=-1, keepdim=True) + 1e-6)
        score = vn[..., 2]
        weights = torch.softmax(score / 0.1, dim=1)[..., None]
        merged = (weights * canon).sum(1, keepdim=True)
        total = total + 200.0 * (merged - canon).abs().mean(dim=(0, 2, 3)).sum()
    return total


def per_stage(args, net) -> dict:
    """CPU seconds per pass of each stage alone and of the whole encoder (fastest of --steps)."""
    import torch

    def cpu_time(fn):
        fn()
        best = float("inf")
        for _ in range(args.steps):
            c0 = time.process_time()
            fn()
            best = min(best, time.process_time() - c0)
        return best

    torch.autograd.set_detect_anomaly(False)
    stages, head = net["stages"], net["head"]
    for p in net.parameters():
        p.requires_grad_(True)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for p in m.parameters():
                p.requires_grad_(False)
    b = args.frames * args.views
    x = torch.rand(b, 3, args.size, args.size)
    out = {"batch": b, "threads": torch.get_num_threads(), "torch": torch.__version__, "stages": {}}
    names = ("stem", "layer1", "layer2", "layer3", "layer4")
    for name, stage in zip(names, stages):
        with torch.no_grad():
            y = stage(x)

        def fwd(stage=stage, x=x):
            with torch.no_grad():
                stage(x)

        def fwd_bwd(stage=stage, x=x):
            xi = x.detach().requires_grad_(True)
            stage(xi).sum().backward()

        out["stages"][name] = {"forward_cpu_s": cpu_time(fwd), "forward_backward_cpu_s": cpu_time(fwd_bwd)}
        x = y

    def whole():
        h = torch.rand(b, 3, args.size, args.size)
        for s in stages:
            h = s(h)
        head(h.mean(dim=(2, 3))).sum().backward()

    out["encoder_forward_backward_cpu_s"] = cpu_time(whole)
    return out


def main():
    args = _parse()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.per_stage:
        net, _ = build(args)
        print(json.dumps(per_stage(args, net)), flush=True)
        return
    torch.autograd.set_detect_anomaly(args.mode == "released")
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    net, frozen = build(args)
    flame = Flame(g)
    c, w = args.frames, args.views
    images = torch.rand(c * w, 3, args.size, args.size, generator=g)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    target = torch.randn(c * w, 68, 2, generator=g) * 0.3
    params = [p for p in net.parameters() if p.requires_grad]
    adam = torch.optim.Adam(params, lr=2e-5)
    stages, head = net["stages"], net["head"]
    with torch.no_grad():  # the frozen prefix: once per chunk, outside the timed updates
        x0 = images
        for s in stages[:frozen]:
            x0 = s(x0)

    def update():
        x = x0
        for s in stages[frozen:]:
            x = s(x)
        raw = head(x.mean(dim=(2, 3)))
        loss = losses(flame, raw, target, c, w, g)
        adam.zero_grad(set_to_none=True)
        loss.backward()
        adam.step()
        return loss.item()

    for _ in range(args.warmup):
        update()
    times, cpu = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = update()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    result = {
        "mode": args.mode, "frames": c, "views": w, "images_per_step": c * w, "size": args.size,
        "trainable_stages": args.trainable_stages, "channels_last": args.channels_last,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "trainable_params": int(sum(p.numel() for p in params)),
        "step_s": statistics.median(times), "step_s_all": times,
        "step_cpu_s": statistics.median(cpu), "step_cpu_s_all": cpu, "loss": loss if math.isfinite(loss) else None,
        "peak_rss_mb": _peak_rss_mb(),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
