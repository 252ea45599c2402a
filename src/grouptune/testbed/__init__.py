"""The embedded testbed: multi-digit arithmetic with a tiny pretrained model (README, "The embedded testbed").

``arithmetic`` generates the task, ``tokenizer`` builds the character tokenizer,
``pretrain`` trains the shipped base model, ``paths`` locates the shipped files and
``check`` reports a model's accuracy on them. Nothing is imported here.
"""
