"""``yolov7-studio demo``: the built-in end-to-end run, with no external data and nothing downloaded.

1. generates the demo dataset (shapes on textured backgrounds, several sizes, some crowding) and checks it;
2. trains yolov7-tiny with the lead AND the auxiliary head from scratch on the CPU (or CUDA when present);
3. evaluates the best checkpoint on the test split with pycocotools;
4. re-parameterizes it into the fused deploy form and checks that the outputs did not change;
5. detects objects in a few test images (annotated PNGs);
6. draws how YOLOv7 assigned labels on one image: lead vs auxiliary objectness maps, fine vs coarse positives.

A finished training in ``--out`` is reused (``--retrain`` starts over), so running the command again is quick.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="built-in end-to-end demo: data, training with aux head, eval, deploy, "
        "detection, label-assignment pictures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--data", default="datasets/demo", help="where the demo dataset is generated")
    p.add_argument("--model", default="yolov7-tiny", help="variant to train")
    p.add_argument("--epochs", type=int, default=30, help="training epochs")
    p.add_argument("--img", type=int, default=256, help="training image size")
    p.add_argument("--batch", type=int, default=16, help="batch size")
    p.add_argument("--images", type=int, default=300, help="number of demo images to generate")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--retrain", action="store_true", help="train again even if --out holds a finished run")
    p.set_defaults(func=run)


def _section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from core.checkpoint.io import load_model
    from core.data import check_dataset, load_dataset
    from core.data.demo import ensure_demo_dataset
    from core.device import cpu_has_native_bf16, select_device
    from core.eval import evaluate
    from core.explore import explore_image, save_exploration, training_hooks
    from core.inference import Predictor, convert_for_deploy, draw_detections, read_image
    from core.train import RunDir, TrainConfig, Trainer

    t_start = time.time()
    out = Path(args.out)
    device = select_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(torch.get_num_threads(), 8)))

    _section("1. the built-in demo dataset")
    data_yaml = ensure_demo_dataset(args.data, n_images=args.images)
    report = check_dataset(load_dataset(data_yaml), decode=True)
    ds = report.dataset
    print(
        f"{data_yaml}: {len(ds.images)} images {ds.split_counts()}, {ds.num_boxes} boxes, classes "
        f"{', '.join(ds.class_names)}; problems found: {len(report.issues)}"
    )

    _section(f"2. training {args.model} with lead + auxiliary heads ({args.epochs} epochs, {args.img} px, {device})")
    run_dir = RunDir(out / "train")
    status = run_dir.read_status() or {}
    if args.retrain and run_dir.root.exists():
        shutil.rmtree(run_dir.root)
        status = {}
    if status.get("state") == "finished" and run_dir.best.exists():
        print(f"reusing the finished run in {run_dir.root} (--retrain to train again)")
    else:
        cfg = TrainConfig(
            data=str(data_yaml),
            recipe="official",  # the demo's numbers (README) were measured with the official recipe
            model=args.model,
            aux=True,
            out=str(run_dir.root),
            epochs=args.epochs,
            img=args.img,
            batch=args.batch,
            device=args.device,
            workers=2,
            close_mosaic=3,
            bf16=device.type == "cpu" and cpu_has_native_bf16(),
            objectness_every=max(1, args.epochs // 6),
            eval_interval=5,
        )
        resume = run_dir.root if run_dir.last.exists() else None
        Trainer(cfg, hooks=training_hooks(cfg), resume=resume, log=print).fit()
    print(f"run directory: {run_dir.root} (results.csv, plots/, objectness/, weights/)")

    _section("3. evaluation of best.pt on the test split (pycocotools)")
    model = load_model(run_dir.best).model
    result = evaluate(
        model, ds, "test", img_size=args.img, device=device, workers=0, save_json=out / "predictions_test.json"
    )
    print(result.summary())

    _section("4. re-parameterization into the deploy form")
    conversion = convert_for_deploy(model)
    assert conversion.check is not None
    print(conversion.check.to_text())
    deploy_params = sum(p.numel() for p in conversion.model.parameters())
    print(f"training form {sum(p.numel() for p in model.parameters()):,} params -> deploy form {deploy_params:,}")

    _section("5. detection on test images")
    det_dir = out / "detections"
    det_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(model, device=device, img_size=args.img)
    test_images = [r.path for r in ds.split("test")[:4]]
    for path, det in zip(test_images, predictor(test_images, conf=0.25, iou=0.45)):
        png = det_dir / f"{Path(path).stem}.png"
        draw_detections(read_image(path), det).save(png)
        print(f"{png}: {len(det.scores)} objects")

    _section("6. how YOLOv7 assigned the labels of one image (lead vs auxiliary head)")
    rec = max(ds.split("val"), key=lambda r: r.num_boxes)
    exp = explore_image(model, rec.path, rec.boxes, rec.classes, img_size=args.img, device=device)
    saved = save_exploration(exp, out / "assignment", name=rec.path.stem)
    print(f"{saved.html}: interactive; {len(saved.pngs)} PNG panels in {out / 'assignment'}")
    print("  box  class      size    lead (fine) positives per level   aux (coarse) positives per level")
    for b in exp.box_summaries()[:8]:
        fine, coarse = b.get("fine", {}), b.get("coarse", {})
        print(
            f"  {b['index']:>3}  {b['class_name']:<10} {b['size']:<7} {str(fine.get('positives_per_level')):<33} "
            f"{coarse.get('positives_per_level')}"
        )

    print(f"\ndone in {(time.time() - t_start) / 60:.1f} min; everything is under {out}")
    return 0
