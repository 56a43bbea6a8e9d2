"""Time a timm model, for ``ppuhd benchmark``'s comparison (run by path, by an interpreter with torch and timm).

Prints one JSON line: median seconds per batch (forward under no_grad, or with --train one
AdamW step with soft-target cross-entropy) and the process's peak resident memory.
"""

import argparse
import json
import resource
import statistics
import time

import timm
import torch


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=[224, 224])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--train", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        model = timm.create_model(args.model, pretrained=False, img_size=args.size)
    except TypeError:  # convolutional networks take any size and have no img_size
        model = timm.create_model(args.model, pretrained=False)
    x = torch.rand(args.batch, 3, *args.size)
    if args.train:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        target = torch.softmax(torch.randn(args.batch, model.num_classes), dim=1)

        def run():
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            loss = torch.sum(-target * torch.log_softmax(out, dim=-1), dim=-1).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    else:
        model.eval()

        def run():
            with torch.no_grad():
                model(x)

    for _ in range(args.warmup):
        run()
    seconds = []
    for _ in range(args.runs):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    # the line ppuhd's benchmark command reads (its RESULT_PREFIX; this script cannot import ppuhd)
    print("benchmark result: " + json.dumps({"median_s": statistics.median(seconds), "peak_memory_gib": peak}))


if __name__ == "__main__":
    main()
