"""The toy-world tasks of a prepared dataset as lm-eval task YAMLs, for ``--include_path``.

    python -m studies.tasks.lm_eval_tasks PREPARED_DATA_DIR OUT_DIR
    arm-mdm-eval --model arm_mdm --model_args checkpoint=RUN/checkpoints/final.ckpt \\
        --tasks toyworld,toy_validation --include_path OUT_DIR --device cpu --batch_size 16

The task definitions live in ``studies/tasks/lm_eval_yaml/`` (plain lm-eval YAML: prompts, choices,
filters, metrics). Their items live in the prepared data folder, whose name carries the data
config's hash, so a YAML cannot name its file in advance: ``write_task_yamls`` copies the
definitions into ``OUT_DIR`` with ``dataset_path: json`` and ``dataset_kwargs.data_files`` pointing
at this folder's ``tasks/NAME.jsonl``. The perplexity task ``toy_validation`` reads the validation
documents, decoded from the prepared validation shards (split at EOS) into ``OUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import List, Optional

TEMPLATES = Path(__file__).parent / "lm_eval_yaml"
VALIDATION_TASK = "toy_validation"


def validation_documents(data_dir) -> List[str]:
    """The prepared validation split as text, one string per EOS-terminated document."""
    import numpy as np
    from tokenizers import Tokenizer

    from studies.data.layout import load_metadata

    data_dir = Path(data_dir)
    metadata = load_metadata(data_dir)
    tokenizer = Tokenizer.from_file(str(data_dir / "tokenizer.json"))
    dtype = np.dtype(metadata["dtype"]).newbyteorder("<")
    stream = np.concatenate([np.fromfile(data_dir / shard["file"], dtype=dtype)
                             for shard in metadata["splits"]["validation"]["shards"]] or [np.zeros(0, dtype)])
    ends = np.flatnonzero(stream == metadata["special_ids"]["eos"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    pieces = [stream[s:e].tolist() for s, e in zip(starts, ends) if e > s]
    return [text for text in tokenizer.decode_batch(pieces, skip_special_tokens=True)]


def write_task_yamls(data_dir, out_dir, *, validation: bool = True) -> Path:
    """Write the lm-eval YAMLs of ``data_dir``'s toy-world tasks (and, with ``validation``,
    ``toy_validation``) into ``out_dir``; returns ``out_dir``, the folder to pass as ``--include_path``."""
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir)
    tasks = data_dir / "tasks"
    if not (data_dir / "metadata.json").is_file():
        raise FileNotFoundError(f"{data_dir} is not a prepared dataset (no metadata.json); run "
                                "`python -m studies.data prepare` and pass the folder it printed")
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = out_dir / f"{VALIDATION_TASK}.jsonl"
    if validation:
        with open(documents, "w", encoding="utf-8") as f:
            for text in validation_documents(data_dir):
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    written = []
    for template in sorted(TEMPLATES.iterdir()):
        if template.name.startswith("_"):
            shutil.copyfile(template, out_dir / template.name)
            continue
        if template.suffix != ".yaml":
            continue
        name = template.stem
        items = documents.resolve() if name == VALIDATION_TASK else tasks / f"{name}.jsonl"
        if not items.is_file():
            continue
        text = template.read_text(encoding="utf-8").rstrip("\n")
        text += f"\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(items))}\n"
        (out_dir / template.name).write_text(text, encoding="utf-8")
        written.append(name)
    if not set(written) - {VALIDATION_TASK}:
        raise FileNotFoundError(f"{tasks} holds none of the toy-world task files; only the toy world "
                                "(data.source=toyworld) writes them")
    return out_dir


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.tasks.lm_eval_tasks", description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="a prepared data folder (metadata.json, tokenizer.json, tasks/)")
    parser.add_argument("out_dir", help="where to write the YAMLs (pass it to --include_path)")
    args = parser.parse_args(argv)
    try:
        out = write_task_yamls(args.data_dir, args.out_dir)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
