"""The embedded testbed: multi-digit arithmetic with a tiny pretrained model, small enough to
post-train on a CPU in minutes.

``arithmetic`` generates the task, ``tokenizer`` builds the character tokenizer,
``pretrain`` trains the shipped base model, ``reward_model`` the shipped reward model,
``paths`` locates the shipped files and ``check`` reports a model's accuracy on them. ``commands`` runs ``grouptune demo`` and
``grouptune compare``; ``report`` writes the report of ``compare`` (it imports ``paths``,
never ``commands``). Nothing is imported here.
"""
