"""Times the PyTorch smplx FLAME layer on the same model files as benchmark_flame.py.

Runs in a *separate* virtual environment that has torch and smplx (PyTorch is never a
dependency of this project)::

    python -m venv /tmp/smplxvenv
    /tmp/smplxvenv/bin/pip install torch==2.13.0 numpy scipy
    /tmp/smplxvenv/bin/pip install --no-deps smplx

benchmark_flame.py calls it with ``--torch_python=/tmp/smplxvenv/bin/python``; it reads
a JSON request on the command line and prints a JSON result on its last stdout line.
Only the standard library, numpy, torch and smplx are imported here.
"""

import json
import sys
import time


def main():
    request = json.loads(sys.argv[1])
    import torch
    import smplx

    torch.manual_seed(0)
    results = []
    for batch in request["batch_sizes"]:
        layer = smplx.FLAME(
            model_path=request["model_dir"],
            num_betas=request["n_shape"],
            num_expression_coeffs=request["n_expr"],
            use_face_contour=True,
            batch_size=batch,
        )
        g = torch.Generator().manual_seed(batch)
        kw = dict(
            betas=torch.randn(batch, request["n_shape"], generator=g),
            expression=torch.randn(batch, request["n_expr"], generator=g),
            global_orient=0.3 * torch.randn(batch, 3, generator=g),
            neck_pose=0.1 * torch.randn(batch, 3, generator=g),
            jaw_pose=0.1 * torch.randn(batch, 3, generator=g),
            leye_pose=0.1 * torch.randn(batch, 3, generator=g),
            reye_pose=0.1 * torch.randn(batch, 3, generator=g),
        )
        iters = max(3, int(request["frames_per_measure"] // batch))

        def fwd():
            with torch.no_grad():
                out = layer(**kw)
            return out.vertices, out.joints

        def fwd_bwd():
            params = {k: v.detach().requires_grad_(True) for k, v in kw.items()}
            out = layer(**params)
            loss = out.vertices.square().sum() + out.joints.square().sum()
            loss.backward()
            return loss

        entry = {"batch": batch}
        for name, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
            fn()  # warm-up
            best = float("inf")
            for _ in range(request["repeats"]):
                t0 = time.perf_counter()
                for _ in range(iters):
                    fn()
                best = min(best, (time.perf_counter() - t0) / iters)
            entry[name + "_fps"] = batch / best
        results.append(entry)
        print(json.dumps(entry), file=sys.stderr)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results}))


if __name__ == "__main__":
    main()
