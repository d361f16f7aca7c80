"""``yolov7-studio demo``: the built-in demonstration run, no external data and no downloads.

It shows the engine end to end on what it can make itself: the model zoo table, a yolov7-tiny built with
the auxiliary head, its re-parameterization into the deploy form (checked numerically), and a checkpoint
written and read back safely. Later stages (training on the generated demo dataset, assignment pictures)
are added here as the engine grows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="built-in demonstration: model zoo, re-parameterization check, checkpoints",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--model", default="yolov7-tiny", help="model to build (default yolov7-tiny)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from core.checkpoint.io import load_model, save_checkpoint
    from core.cli.models import format_table
    from core.models import build_model, list_models, reparameterize
    from core.models.fuse import equivalence
    from core.models.profile import profile

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    print("== the YOLOv7 model zoo (counted as the paper counts) ==")
    print(format_table([profile(n).to_dict() for n in list_models()]))

    print(f"\n== {args.model}: training form with lead + auxiliary head ==")
    model = build_model(args.model, num_classes=80, aux=True)
    model.train()
    x = torch.rand(2, 3, 320, 320)
    levels = model(x)
    for i, t in enumerate(levels):
        role = "lead" if i < model.num_levels else "aux "
        print(f"  {role} level {i % model.num_levels}: raw {tuple(t.shape)}")

    print("\n== re-parameterization: training form -> deploy form ==")
    model.eval()
    t0 = time.perf_counter()
    deploy = reparameterize(model)
    diff = equivalence(model, deploy, x[:1])
    print(
        f"  params {sum(p.numel() for p in model.parameters()):,} -> {sum(p.numel() for p in deploy.parameters()):,}"
        f" ({time.perf_counter() - t0:.2f} s)"
    )
    print(f"  max |difference| of decoded outputs: boxes {diff['box_px']:.2e} px, probabilities {diff['prob']:.2e}")

    print("\n== checkpoints ==")
    path = save_checkpoint(out / f"{args.model}-aux.pt", model)
    back = load_model(path).model.eval()
    with torch.no_grad():
        same = torch.equal(back(x[:1]), model(x[:1]))
    print(
        f"  wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and read it back with weights_only=True: "
        f"{'identical outputs' if same else 'OUTPUTS DIFFER'}"
    )
    return 0 if same else 1
