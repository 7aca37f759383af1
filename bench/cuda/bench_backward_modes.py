# cutlass-fna forward+backward through PyTorch with the two backward modes alternating in one process:
# deterministic (torch.use_deterministic_algorithms(True): dq + dkdv kernels) and fused dQ (the default).
# Usage (package built, e.g. scripts/test_gpu_python.sh): python3 bench/cuda/bench_backward_modes.py
import torch, nattn
torch.manual_seed(0)
def run(spatial, k, heads, iters=20):
    shape = (1, *spatial, heads, 128)
    q, kk, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    dout = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    fn = {2: nattn.na2d, 3: nattn.na3d}[len(spatial)]
    def step():
        for t in (q, kk, v): t.grad = None
        fn(q, kk, v, kernel_size=k, backend="cutlass-fna").backward(dout)
    res = {True: [], False: []}
    for det in (True, False, True, False):
        torch.use_deterministic_algorithms(det)
        for _ in range(2): step()
        torch.cuda.synchronize()
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(); step(); b.record(); b.synchronize()
            res[det].append(a.elapsed_time(b))
    torch.use_deterministic_algorithms(False)
    for det in (True, False):
        t = sorted(res[det]); print(f"{spatial} k{k} heads {heads}: {'deterministic' if det else 'fused dQ    '} fwd+bwd median {t[len(t)//2]:.2f} ms (min {t[0]:.2f})")
run((128, 128), (13, 13), 16)
run((16, 44, 80), (8, 16, 24), 16, iters=10)
