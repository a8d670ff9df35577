"""Labelled text datasets: loading (folder, CSV/TSV/JSONL, Hugging Face Hub, embedded ``tweets``), split
completion and balanced, seeded, nested k-shot sampling.

Everything returns plain Python lists so that the rest of the package (and a notebook) can use the data
without this package. Labels are always class indices ``0..C-1``; ``TextDataset.label_names`` names them.

Modules, each importing only the ones listed before it: ``types`` (the data classes), ``readers`` (CSV,
TSV and JSONL rows), ``splits`` (split names, stratified carving and subsets), ``labels`` (raw labels to
class indices: datasets and texts to predict), ``sampling`` (k-shot samples), ``summary`` (:func:`describe`),
``write`` (writing rows, fingerprints) and ``sources`` (folder, file, ``tweets``, Hub: :func:`load_dataset`).
"""

from codistill.data.labels import read_texts
from codistill.data.readers import iter_json_lines
from codistill.data.sampling import sample_from, sample_k_shot
from codistill.data.sources import load_dataset, load_hub
from codistill.data.splits import stratified_subset
from codistill.data.summary import describe
from codistill.data.types import LabeledTexts, TextDataset, TextRows
from codistill.data.write import texts_fingerprint, write_labeled

__all__ = [
    "LabeledTexts", "TextDataset", "TextRows", "describe", "iter_json_lines", "load_dataset", "load_hub",
    "read_texts", "sample_from", "sample_k_shot", "stratified_subset", "texts_fingerprint", "write_labeled",
]
