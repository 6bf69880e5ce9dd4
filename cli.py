"""The `hashsearch` command (installed as hashsearch.cli)."""
from __future__ import annotations

import functools
import os
import sys

import click

from hashsearch.errors import HashsearchError


def one_line_errors(fn):
    """Turn expected failures into one clear line on stderr and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (HashsearchError, ValueError, OSError, KeyError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group()
@click.version_option(package_name="hashsearch")
def main() -> None:
    """Learned binary codes and exact Hamming search."""


# --- index commands (STORAGE): logic in hashsearch/codefiles.py and querying.py -----------------

@main.command("build-index")
@click.argument("codes", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Index directory to write (replaced atomically).")
@click.option("--backend", type=click.Choice(["numba", "faiss", "mih"]), default="numba", show_default=True)
@click.option("--ids", "ids_path", type=click.Path(dir_okay=False), help="int64 ids (.npy), one per code.")
@click.option("--nbits", type=int, help="Code width in bits (tells a uint8 0/1 bit matrix from packed bytes).")
@click.option("--column", help="Parquet column holding the codes (binary, fixed_size_binary or list).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Backend parameter, repeatable.")
@click.option("--batch-size", type=int, default=1 << 22, show_default=True, help="Codes added per step.")
@click.option("--metadata/--no-metadata", default=True, show_default=True,
              help="Keep a Parquet file's other columns as per-item metadata in the index.")
@click.option("--shards", type=click.IntRange(min=1), default=None,
              help="Write a sharded index of N shards (id % N); Parquet input is read in parallel with Ray Data.")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster for --shards (default: $RAY_ADDRESS, else a local instance).")
@one_line_errors
def build_index_command(codes, out, backend, ids_path, nbits, column, params, batch_size, metadata, shards,
                        ray_address) -> None:
    """Build an index from CODES (.npy, .parquet, or with --shards a folder of .parquet) and save it to --out."""
    from hashsearch import codefiles, querying

    if shards is not None:
        _build_sharded(codes, out, backend, ids_path, nbits, column, querying.parse_params(params), metadata,
                       shards, ray_address)
        return
    code_file = codefiles.read_codes(codes, nbits=nbits, column=column, with_metadata=metadata)
    if code_file.note:
        click.echo(code_file.note, err=True)
    ids = codefiles.read_ids(ids_path, code_file.codes.shape[0]) if ids_path else None
    index = querying.build_index(code_file, out, backend=backend, ids=ids,
                                 params=querying.parse_params(params), batch_size=batch_size)
    click.echo(f"wrote {out}: {len(index)} codes of {index.nbits} bits, backend {backend}", err=True)


def _build_sharded(codes, out, backend, ids_path, nbits, column, params, metadata, shards, ray_address) -> None:
    from pathlib import Path

    from hashsearch import codefiles, raydata, sharded

    if Path(codes).suffix.lower() == ".npy":
        code_file = codefiles.read_codes(codes, nbits=nbits)
        ids = codefiles.read_ids(ids_path, code_file.codes.shape[0]) if ids_path else None
        counts = sharded.write_sharded(out, code_file.codes, ids, shards, backend=backend, params=params)
    else:
        if ids_path:
            raise click.UsageError("--ids applies to .npy codes; a Parquet file carries its ids in column 'id'")
        counts = raydata.build_sharded(codes, out, shards, backend=backend, params=params, column=column,
                                       nbits=nbits, with_metadata=metadata, address=ray_address)
    click.echo(f"wrote {out}: {sum(counts)} codes in {shards} shards ({', '.join(map(str, counts))}), "
               f"backend {backend}", err=True)


@main.command("query")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.argument("queries", type=click.Path(dir_okay=False))
@click.option("--topk", type=int, help="The K nearest codes per query (ties by ascending id).")
@click.option("--radius", type=int, help="Every code within Hamming distance R (inclusive).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Result file (jsonl: default stdout; parquet: required).")
@click.option("--column", help="Parquet column holding the query codes.")
@click.option("--batch-size", type=int, default=1024, show_default=True, help="Queries searched per step.")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster for a sharded index (default: $RAY_ADDRESS, else a local instance).")
@one_line_errors
def query_command(index_dir, queries, topk, radius, fmt, out, column, batch_size, ray_address) -> None:
    """Search the index in INDEX_DIR with the codes in QUERIES (.npy or .parquet)."""
    from hashsearch import codefiles, querying
    from hashsearch.errors import InvalidInputError
    from hashsearch.index import HammingIndex

    if fmt == "parquet" and out is None:
        raise InvalidInputError("--format parquet needs --out FILE")
    from hashsearch.sharded import ShardedIndex, is_sharded

    if is_sharded(index_dir):
        index = ShardedIndex.load(index_dir, address=ray_address)
    else:
        index = HammingIndex.load(index_dir, mmap=True)
    query_file = codefiles.read_codes(queries, nbits=index.nbits, column=column)
    if query_file.note:
        click.echo(query_file.note, err=True)
    batches = querying.search_batches(index, query_file.codes, topk=topk, radius=radius, batch_size=batch_size)
    querying.write_results(batches, fmt, out, stdout=sys.stdout)


@main.command("info")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.option("--no-verify", is_flag=True, help="Skip the SHA-256 checks (sizes and schema are still checked).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
@one_line_errors
def info_command(index_dir, no_verify, as_json) -> None:
    """Describe an index: bits, count, backend, bytes on disk and per item, checksums."""
    import json

    from hashsearch import querying

    info = querying.describe_index(index_dir, verify=not no_verify)
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo("\n".join(querying.format_info(info)))


@main.command("serve")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", envvar="HASHSEARCH_API_KEY", default=None,
              help="Key that /add, /remove and /save require in the X-API-Key header (or $HASHSEARCH_API_KEY).")
@click.option("--max-batch", type=click.IntRange(min=1), default=1024, show_default=True, help="Codes per request.")
@click.option("--max-k", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--max-body", type=click.IntRange(min=1), default=16 << 20, show_default=True, help="Request bytes.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="Copies of each shard of a sharded index (throughput).")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster for a sharded index (default: $RAY_ADDRESS, else a local instance).")
@one_line_errors
def serve_command(index_dir, host, port, api_key, max_batch, max_k, max_body, replicas, ray_address) -> None:
    """Serve INDEX_DIR (single or sharded) over HTTP: /search, /range, /add, /remove, /save, /info, /docs."""
    from hashsearch.server import Limits, serve

    click.echo(f"serving {index_dir} on http://{host}:{port} (API docs at /docs)", err=True)
    serve(index_dir, host=host, port=port, api_key=api_key, replicas=replicas, address=ray_address,
          limits=Limits(max_batch=max_batch, max_k=max_k, max_body_bytes=max_body))


@main.command("bench")
@click.option("--quick", "mode", flag_value="quick", default=True, help="A few minutes on 2 cores (default).")
@click.option("--full", "mode", flag_value="full", help="The whole grid: nbits 16-128, n up to 10^7, learners' recommended settings.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for report.md, results.json, PNGs.")
@click.option("--models", "models_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Read trained models from this folder instead of training them.")
@click.option("--sections", default=None, help="Comma-separated subset of physical,latency,storage,accuracy,scale.")
@click.option("--threads", type=int, default=None, help="Threads for FAISS, numba and torch (default: every core).")
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE",
              help="Change one setting of the grid, e.g. --set sizes=1e4,1e6 --set accuracy_epochs=20 (repeatable).")
@one_line_errors
def bench_command(mode: str, out_dir: str, models_dir: str | None, sections: str | None, threads: int | None,
                  settings: tuple[str, ...]) -> None:
    """Measure size, speed and accuracy; write DIR/report.md, results.json and plots."""
    from hashsearch.bench.runner import SECTIONS, run

    chosen = tuple(s.strip() for s in sections.split(",")) if sections else SECTIONS
    report = run(mode, out_dir, models_dir=models_dir, sections=chosen, threads=threads, settings=settings)
    click.echo(f"wrote {report}")


# --- the main job (DCMH): logic in hashsearch/demo.py ----------------------------------------------

@main.command("demo")
@click.option("--data", default=None, help="Data set name or file (default: the embedded seeded synthetic paired set).")
@click.option("--nbits", type=int, default=32, show_default=True, help="Code width in bits.")
@click.option("--epochs", type=int, default=30, show_default=True, help="DCMH training epochs.")
@click.option("--k", type=int, default=5, show_default=True, help="Results shown per example query.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data, split and training.")
@one_line_errors
def demo_command(data: str | None, nbits: int, epochs: int, k: int, seed: int) -> None:
    """Train DCMH, encode both modalities, index them, query text->image and image->text, print MAP."""
    from hashsearch.demo import run_demo

    run_demo(data=data, nbits=nbits, epochs=epochs, k=k, seed=seed, echo=click.echo)


# --- train and encode (data set -> model -> codes): logic in hashsearch/jobs.py --------------------

def _widths(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 16,32,64, got {text!r}") from None


@main.command("train")
@click.option("--data", required=True, help="Data set name (wikipedia, mirflickr, nuswide, mnist, digits, synthetic) or a .mat/.npz/.parquet file.")
@click.option("--method", "methods", default="dcmh", show_default=True,
              help="Comma-separated learners: dcmh, scm, cca-itq, schn, dpsh, itq, lsh.")
@click.option("--nbits", default="16,32,64", show_default=True, help="Comma-separated code widths (multiples of 8).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder; models go to OUT/<data set>/<METHOD>-<nbits>.")
@click.option("--modality", type=click.Choice(["image", "text"]), default="image", show_default=True,
              help="What single-modal learners are trained on.")
@click.option("--epochs", type=int, default=None, help="Deep learners' epochs (default: their recommended settings).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and of training.")
@click.option("--resume", is_flag=True, help="Continue interrupted training from each model's checkpoint (DCMH).")
@one_line_errors
def train_command(data, methods, nbits, out, modality, epochs, seed, resume) -> None:
    """Train learners on a data set's standard split and save them (read by encode, eval, bench --models)."""
    from hashsearch import jobs

    jobs.train(data, [m.strip() for m in methods.split(",") if m.strip()], _widths(nbits), out,
               modality=modality, epochs=epochs, seed=seed, resume=resume, echo=click.echo)


@main.command("encode")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", required=True, help="Data set name or file, as for train.")
@click.option("--modality", type=click.Choice(["image", "text"]), default="image", show_default=True)
@click.option("--split", "which", type=click.Choice(["database", "query", "train", "all"]), default="database",
              show_default=True, help="Rows of the standard split to encode.")
@click.option("--out", required=True, type=click.Path(), help="Parquet file of (id, code) rows (--ray: a new folder of them).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the standard split.")
@click.option("--ray", "use_ray", is_flag=True, help="Encode in batches across Ray workers (Ray Data).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Ray workers (default: the cluster's CPUs).")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster for --ray (default: $RAY_ADDRESS, else a local instance).")
@one_line_errors
def encode_command(model_dir, data, modality, which, out, seed, use_ray, workers, ray_address) -> None:
    """Encode one modality of a data set with a trained model: codes ready for build-index / query."""
    from hashsearch import jobs

    if use_ray:
        from hashsearch.raydata import encode_parallel

        rows = encode_parallel(model_dir, data, out, modality=modality, split=which, seed=seed, workers=workers,
                               address=ray_address)
        click.echo(f"wrote {out}/: {rows} {modality} codes ({which} rows) in Parquet files", err=True)
        return
    rows, nbits = jobs.encode(model_dir, data, out, modality=modality, split=which, seed=seed)
    click.echo(f"wrote {out}: {rows} {modality} codes of {nbits} bits ({which} rows)", err=True)


# --- eval (DATA+METRICS): logic in hashsearch/evaluation.py --------------------------------------

@main.command("eval")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", required=True, help="Data set name (wikipedia, mirflickr, nuswide, mnist, digits, synthetic) or a .mat/.npz/.parquet file.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Report folder (default: MODEL_DIR/eval-<data>).")
@click.option("--topk", type=int, default=1000, show_default=True, help="K of mAP@K and the end of the top-K curve.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the standard split.")
@one_line_errors
def eval_command(model_dir: str, data: str, out_dir: str | None, topk: int, seed: int) -> None:
    """Score a trained model on the data set's standard split: report.md, results.json, PNG curves."""
    from pathlib import Path

    from hashsearch.evaluation import run_eval

    out = out_dir or str(Path(model_dir) / f"eval-{Path(data).stem}")
    result, report = run_eval(model_dir, data, out, topk=topk, seed=seed)
    for task, scores in result["tasks"].items():
        click.echo(f"{result['dataset']} {result['nbits']} bits {task}: mAP@all {scores['map_all']:.4f}  "
                   f"mAP@{scores['k']} {scores['map_at_k']:.4f}  P@H<={scores['radius']} {scores['precision_within_radius']:.4f}")
    click.echo(f"wrote {report}", err=True)

if __name__ == "__main__":
    main()
