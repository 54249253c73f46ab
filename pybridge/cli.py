"""The ``pybridge`` command line.

    pybridge annotate --reference ref.h5ad --query query.h5ad --out annotated.h5ad [--csv labels.csv]
    pybridge train    --reference ref.h5ad [--query query.h5ad] --out model_dir
    pybridge predict  --model model_dir --query query.h5ad --out annotated.h5ad   (any method's model)
    pybridge cluster  --method cicl --input data.h5ad --out clustered.h5ad [--n-clusters K]

Method options go through ``--set key=value`` (repeatable), e.g.
``--set reject=true --set n_epochs=100``. Bad input exits with status 2
and a one-line reason; ``--quiet`` silences progress output.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from . import __version__
from ._settings import logger


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _parse_value(text: str):
    low = text.lower()
    if low in {"true", "false"}:
        return low == "true"
    if low in {"none", "null"}:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_sets(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise CLIError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = _parse_value(v.strip())
    return out


def _is_rds(path) -> bool:
    return str(path).lower().endswith(".rds")


def read_input(path, what: str):
    """Read an ``.h5ad`` file (or a Seurat/SCE ``.rds`` file through rpy2)."""
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{what} file {str(p)!r} does not exist")
    if _is_rds(p):
        from .r import read_rds

        return read_rds(p)
    import anndata

    try:
        return anndata.read_h5ad(p)
    except Exception as err:  # h5py/anndata raise many types for non-h5ad files
        raise CLIError(f"could not read {what} {str(p)!r} as .h5ad ({type(err).__name__}: {err})") from None


def _atomic(path, write) -> None:
    """Write to a temporary name next to ``path`` and rename it: an interrupted run leaves no partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_output(adata, result, key_added: str, out: str | None, csv: str | None, source: str | None) -> None:
    if csv:
        _atomic(csv, lambda p: result.to_dataframe().to_csv(p))
        logger.info("wrote %s", csv)
    if out:
        if _is_rds(out):
            from .r import write_result_rds

            if source is None or not _is_rds(source):
                raise CLIError(
                    "--out *.rds needs the query to be an .rds file too (the annotated object is written back)"
                )
            _atomic(out, lambda p: write_result_rds(source, p, result, key_added))
        else:
            result.to_adata(adata, key_added)
            _atomic(out, adata.write_h5ad)
        logger.info("wrote %s", out)


def check_output(adata, key_added: str, method: str, out: str | None, source: str | None) -> None:
    """Refuse, before any training, an output that could not be written."""
    if not out:
        return
    if _is_rds(out):
        if source is None or not _is_rds(source):
            raise CLIError("--out *.rds needs the query to be an .rds file too (the annotated object is written back)")
        return  # the R package checks the object's names when it stores the result
    if Path(out).suffix.lower() != ".h5ad":
        raise CLIError(
            f"--out {out!r}: the annotated data are written as .h5ad (or .rds for an .rds input); "
            "name the file *.h5ad, and use --csv for a table of labels and confidences"
        )
    from .result import check_key

    check_key(adata, key_added, method, warn=False)
    parent = Path(out).resolve().parent
    if not parent.is_dir():
        raise CLIError(f"cannot write {out!r}: the folder {str(parent)!r} does not exist")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log messages")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="method option, repeatable")


def build_parser() -> argparse.ArgumentParser:
    from .api import get_method, methods

    parser = argparse.ArgumentParser(prog="pybridge", description="Reference-based annotation and transfer clustering.")
    parser.add_argument("--version", action="version", version=f"pybridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("annotate", help="train on a labelled reference and annotate a query")
    a.add_argument("--reference", required=True, help="labelled reference (.h5ad or .rds)")
    a.add_argument("--query", required=True, help="query to annotate (.h5ad or .rds)")
    with_reference = [m for m in methods() if get_method(m).reference == "required"]
    a.add_argument("--method", default="scnym", choices=with_reference)
    a.add_argument("--labels-key", default="cell_type", help="reference label column (default cell_type)")
    a.add_argument("--layer", default=None, help="query layer with raw counts (default X)")
    a.add_argument("--reference-layer", default=None, help="reference layer with raw counts (default X)")
    a.add_argument("--key-added", default=None, help="output key (default: the method name)")
    a.add_argument("--out", help="annotated query (.h5ad, or .rds when the query is .rds)")
    a.add_argument("--csv", help="also write labels and confidences as CSV")
    _common(a)

    t = sub.add_parser("train", help="train a model and save it to a directory")
    t.add_argument("--reference", help="labelled reference (every method but cicl)")
    t.add_argument("--query", help="unlabelled target data (semi-supervised methods; the data cicl learns from)")
    t.add_argument("--method", default="scnym", choices=methods())
    t.add_argument("--labels-key", default="cell_type")
    t.add_argument("--reference-layer", default=None)
    t.add_argument("--out", required=True, help="model directory to write")
    _common(t)

    pr = sub.add_parser("predict", help="annotate or cluster a query with a saved model")
    pr.add_argument("--model", required=True, help="model directory from `pybridge train`")
    pr.add_argument("--query", required=True)
    pr.add_argument("--layer", default=None)
    pr.add_argument("--key-added", default=None)
    pr.add_argument("--out")
    pr.add_argument("--csv")
    _common(pr)

    c = sub.add_parser("cluster", help="cluster a dataset (optionally transferring from a reference)")
    c.add_argument("--method", required=True, choices=methods("clustering") or ["(none yet)"])
    c.add_argument("--input", required=True)
    c.add_argument("--reference", help="reference for transfer clustering")
    c.add_argument("--labels-key", default=None)
    c.add_argument("--n-clusters", type=int, default=None)
    c.add_argument("--layer", default=None)
    c.add_argument("--key-added", default=None)
    c.add_argument("--out")
    c.add_argument("--csv")
    _common(c)
    return parser


def _run(args) -> None:
    from .api import get_method, split_fit_options

    options = _parse_sets(args.set)
    verbose = not args.quiet
    common = {"seed": args.seed, "device": args.device, "verbose": verbose}
    if args.command == "annotate":
        reference = read_input(args.reference, "reference")
        query = read_input(args.query, "query")
        info = get_method(args.method)
        check_output(query, args.key_added or args.method, args.method, args.out, args.query)
        result = info.compute(
            query,
            reference,
            labels_key=args.labels_key,
            layer=args.layer,
            reference_layer=args.reference_layer,
            **common,
            **options,
        )
        write_output(query, result, args.key_added or args.method, args.out, args.csv, args.query)
        _summary(result)
    elif args.command == "train":
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise CLIError(f"--out {args.out!r} exists and is not a folder; a model is saved as a folder")
        info = get_method(args.method)
        reference = read_input(args.reference, "reference") if args.reference else None
        query = read_input(args.query, "query") if args.query else None
        options, fit_options = split_fit_options(info.estimator, options)
        model = info.estimator(**common, **options)
        info.fit(model, reference, query, labels_key=args.labels_key, layer=args.reference_layer, **fit_options)
        model.save(args.out)
        logger.info("saved %s model to %s", args.method, args.out)
    elif args.command == "predict":
        from ._io import read_meta

        meta = read_meta(args.model, warn=False)  # the estimator's load() warns about versions once
        info = get_method(meta["method"])
        model = info.estimator.load(args.model, device=args.device, verbose=verbose, **options)
        query = read_input(args.query, "query")
        check_output(query, args.key_added or meta["method"], meta["method"], args.out, args.query)
        result = info.apply(model, query, layer=args.layer)
        write_output(query, result, args.key_added or meta["method"], args.out, args.csv, args.query)
        _summary(result)
    elif args.command == "cluster":
        adata = read_input(args.input, "input")
        reference = read_input(args.reference, "reference") if args.reference else None
        info = get_method(args.method)
        check_output(adata, args.key_added or args.method, args.method, args.out, args.input)
        kw = dict(common, **options)
        if args.labels_key:
            kw["labels_key"] = args.labels_key
        if args.n_clusters is not None:  # ItClust takes its number of clusters from the reference
            kw["n_clusters"] = args.n_clusters
        result = info.compute(adata, reference=reference, layer=args.layer, **kw)
        write_output(adata, result, args.key_added or args.method, args.out, args.csv, args.input)
        _summary(result)


def _summary(result) -> None:
    """A short table on stdout: counts per label (or cluster) and mean confidence."""
    df = result.to_dataframe()
    col = "label" if "label" in df else "cluster"
    tab = df.groupby(col, observed=True)["confidence"].agg(["size", "mean"]).sort_values("size", ascending=False)
    print(f"{'label' if col == 'label' else 'cluster':<28}{'cells':>8}{'mean confidence':>18}")
    for name, row in tab.iterrows():
        print(f"{str(name):<28}{int(row['size']):>8}{row['mean']:>18.3f}")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler, level = None, logger.level
    if not args.quiet:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pybridge: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings():  # --quiet silences warnings for this call only
            if args.quiet:
                warnings.simplefilter("ignore")
            _run(args)
    except (CLIError, ValueError, TypeError, KeyError, RuntimeError, OSError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"pybridge: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pybridge: interrupted; no output was written", file=sys.stderr)
        return 130
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(level)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
