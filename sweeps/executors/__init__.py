"""Where a launch's runs execute: ``local`` (subprocesses of this machine), ``slurm`` (submitit jobs and
the choice between the two), ``sbatch`` (plain job-array scripts for ``sbatch``)."""
