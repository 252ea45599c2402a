"""Training and evaluation data: prompts, gold answers, demonstrations, teacher responses.

``load_examples(cfg, source, tokenizer)`` reads a data set, checks every row, renders each
prompt the way the model will see it and returns ``Example``s in source order. It never
shuffles: the trainer owns data order.

Sources (``readers``)
    ``.jsonl``   one JSON object per line; blank lines are skipped.
    ``.json``    an array of objects (a ``.json`` file that is not an array is read as JSON Lines).
    ``.parquet`` read with ``datasets``; list and struct columns come as stored.
    ``.csv``     a header row, then text cells; an empty cell is a missing value. A list-valued
                 column holds JSON in its cells: ``teacher_completions`` as ``["a", "b"]``, a
                 chat prompt as ``[{"role": "user", "content": "..."}]``.
    otherwise    a Hugging Face data set, ``datasets.load_dataset(name, split=split)``;
                 ``name:config`` picks a configuration (``openai/gsm8k:main``).

Columns (``presets``)
    Each row gives an ``Example`` four things: a prompt, a gold answer for the verifier, a
    demonstration (an expert completion) and a list of teacher completions. ``DataConfig``
    names their columns (``prompt_column``, ``answer_column``, ``completion_column``,
    ``teacher_column``), or ``cfg.preset`` sets the first three for a well-known data set:

    gsm8k          prompt ``question``; gold = the number after ``####`` in ``answer``;
                   demonstration = ``answer`` without its ``<<48/2=24>>`` calculator notes,
                   ending with ``#### n``.
    math, math500  prompt ``problem``; gold = ``answer`` where the row has one, else the last
                   ``\\boxed{}`` of ``solution``; demonstration = ``solution``.
    numina         prompt ``problem``; gold = the last ``\\boxed{}`` of ``solution``;
                   demonstration = ``solution``.
    dapo_math      prompt ``prompt`` (chat messages); gold = ``reward_model.ground_truth``;
                   no demonstrations.
    ultrafeedback  prompt ``prompt``; demonstration = the last (assistant) message of
                   ``chosen``; no gold answer (``preferences``).
    hh_rlhf        prompt = the turns of the ``chosen`` transcript before its last
                   ``\n\nAssistant:``, as chat messages; demonstration = the response after
                   it; no gold answer (``preferences``).

    A dotted name (``reward_model.ground_truth``) reads inside nested objects, also from
    JSON text in a CSV cell. ``teacher_column`` applies with every preset. A gold answer or
    demonstration may be a number; it is used as text.

Prompts (``prompts``)
    A list of chat messages goes through the tokenizer's chat template with the generation
    prompt added. A string does too, as one user message, when ``cfg.chat_template`` is on
    and the tokenizer has a template; otherwise it is used as it is. ``prompt_suffix`` is
    appended to the last user message, separated by a space. Token ids are taken without
    extra special tokens (as TRL does): the template supplies them. A prompt over
    ``max_prompt_length`` tokens is dropped, truncated (keeping its end, so the generation
    prompt survives) or an error, as ``long_prompts`` says; ``ExampleList.report`` counts them.
    A very long prompt is judged on a window of it, never tokenized whole (``prompts``).

What is checked (``checks``), before any training
    Every problem is collected and raised at once in one ``DataError``, each named by file,
    row (and line, for JSON Lines and CSV) and column: unreadable files and rows; columns
    the source lacks, with close names suggested; values of the wrong type; empty prompts
    and chat messages; gold answers the preset cannot read or the verifiers cannot judge
    (``gold_checks``); rows with fewer teacher completions than the method needs
    (``min_teachers``); prompts the chat template or tokenizer rejects. Columns the config
    names explicitly (a name other than the default) must exist, as must those of the
    fields listed in ``require`` (and a gold answer, with a preset); other default-named
    columns may be absent. Problems of the whole source come first, then row by row.
    Settings no data could satisfy (unknown preset, bad ``long_prompts``) are a
    ``ConfigError`` before anything is read.
"""

from grouptune.data.example import Example, ExampleList, LoadReport, reward_columns
from grouptune.data.loader import check_rows, load_examples, load_run_data
from grouptune.data.presets import LONG_PROMPT_POLICIES, PRESETS, REQUIRABLE
from grouptune.data.problems import MAX_LISTED_PROBLEMS, DataError, Problem
from grouptune.data.readers import LOCAL_FORMATS

__all__ = [
    "LOCAL_FORMATS",
    "LONG_PROMPT_POLICIES",
    "MAX_LISTED_PROBLEMS",
    "PRESETS",
    "REQUIRABLE",
    "DataError",
    "Example",
    "ExampleList",
    "LoadReport",
    "Problem",
    "check_rows",
    "load_examples",
    "load_run_data",
    "reward_columns",
]
