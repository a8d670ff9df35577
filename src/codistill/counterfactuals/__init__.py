"""Counterfactual generation for CoD: minimal edits of the originals that flip the teacher.

One module per concept: the generator interface and records (:mod:`.base`), the teacher's verdict and the
checks every candidate passes (:mod:`.verify`), the generators (:mod:`.edits`, the offline search over
:mod:`.wordnet` antonyms with :mod:`.morphology` and :mod:`.wordlists`; :mod:`.llm`, any OpenAI-compatible
endpoint; :mod:`.chain`), the generators by name (:mod:`.registry`), files for a k-shot sample
(:mod:`.generate`), reading them back for training (:mod:`.rows`), quality figures (:mod:`.metrics`,
:mod:`.quality`, :mod:`.lm`) and a student-aware second round (:mod:`.rounds`).
"""
