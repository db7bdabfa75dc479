"""Which execution choices make the DIP step fastest on a GPU (ms per iteration).

Layout (contiguous / channels-last), Adam implementation (foreach / fused),
bfloat16 autocast and CUDA-graph capture of the whole step, on the paper's skip
net (width 128) at 256² and 512² RGB. Run: python benchmarks/gpu_variants.py
"""

from __future__ import annotations

import json
import time

import torch

from napari_dip.networks import build_network


def bench(side: int, layout: str, adam: str, amp: bool, graph: bool, n: int = 60) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    net = build_network("skip", 32, 3, 128).cuda().to(memory_format=fmt)
    z0 = torch.rand(1, 32, side, side, device="cuda") * 0.1
    y = torch.rand(1, 3, side, side, device="cuda")
    noise = torch.empty_like(z0)
    avg = torch.zeros_like(y)
    kw = {"fused": True} if adam == "fused" else {"foreach": True}
    opt = torch.optim.Adam(net.parameters(), lr=0.01, capturable=graph, **kw)

    def step():
        noise.normal_()
        z = torch.add(z0, noise, alpha=1 / 30)
        with torch.autocast("cuda", torch.bfloat16, enabled=amp):
            out = net(z)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        opt.zero_grad(set_to_none=not graph)
        loss.backward()
        opt.step()
        avg.lerp_(out.detach().float(), 0.01)
        return loss

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    if graph:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=False)
        with torch.cuda.graph(g):
            step()
        run = g.replay
    else:
        run = step
    for _ in range(5):
        run()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        run()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e3


def main() -> None:
    torch.backends.cudnn.benchmark = True
    print("#", torch.cuda.get_device_name(), torch.__version__, flush=True)
    rows = []
    for side in (256, 512):
        for layout in ("contiguous", "channels_last"):
            for adam in ("foreach", "fused"):
                for amp in (False, True):
                    for graph in (False, True):
                        try:
                            ms = bench(side, layout, adam, amp, graph)
                        except Exception as err:  # a variant that cannot run is reported, not fatal
                            ms = f"failed: {str(err).splitlines()[0][:80]}"
                        row = {"size": side, "layout": layout, "adam": adam, "bf16": amp, "graph": graph, "ms": ms}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
