"""The embedded dataset: a procedural motion synthesiser in HumanML3D format, its caption grammar, and the oracle
that checks every clause of a caption on a motion.

    space.py        the caption parameter space (actions, attributes, held-out combinations) and its sampler
    pose.py         the skeleton pose model the motions are built from; curves.py: timing curves
    locomotion.py   walk, jog, run, sidestep, walk backwards, turns and curves
    gestures.py     upper body: wave, raise arms, clap, punch, throw
    lower.py        lower body: squat, jump, kick, kneel, sit down
    captions.py     paraphrased captions of the parameters
    oracle.py       the clause-by-clause score of a motion against its caption's parameters
    build.py        the dataset folder (Parquet splits, statistics, meta.json) and `load_synthetic`
"""
