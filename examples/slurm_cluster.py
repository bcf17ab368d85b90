r"""A Dask cluster on SLURM for `diffeoprobe sweep`: one job per worker, one GPU per job.

Run it on the login node (``pip install dask-jobqueue``), then point the sweep at the address it
prints::

    python examples/slurm_cluster.py --queue gpu --jobs 16 --venv ~/diffeoprobe/.venv
    diffeoprobe sweep examples/sweep-paper.yaml --out /shared/paper \
        --executor dask --scheduler tcp://10.0.0.1:41234 --threads 8 --retries 2

Jobs killed at their wall time take their run with them; Dask resubmits it elsewhere and the run
continues from its last checkpoint (docs/sweeps.md). Adapt the resources to your site.
"""

from __future__ import annotations

import argparse


def make_cluster(
    queue: str = "gpu",
    cores: int = 8,
    memory: str = "32GB",
    walltime: str = "24:00:00",
    gpus: int = 1,
    venv: str = "~/diffeoprobe/.venv",
    scheduler_host: str | None = None,
):
    """A ``dask_jobqueue.SLURMCluster`` whose jobs each run one worker with ``gpus`` GPUs and
    ``cores`` cores, in the virtual environment ``venv`` (no job is submitted until scaled).
    """
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(
        queue=queue,
        cores=cores,
        processes=1,  # one worker per job: a run gets the job's GPU and cores
        memory=memory,
        walltime=walltime,
        job_extra_directives=[f"--gres=gpu:{gpus}"] if gpus else [],
        job_script_prologue=[f"source {venv}/bin/activate"],
        scheduler_options={"host": scheduler_host} if scheduler_host else None,
    )


def main() -> None:
    """Start the cluster the command line describes, print its job script and address, wait."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", default="gpu")
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--memory", default="32GB")
    parser.add_argument("--walltime", default="24:00:00")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per job (0: CPU jobs)")
    parser.add_argument("--venv", default="~/diffeoprobe/.venv")
    parser.add_argument("--jobs", type=int, default=16, help="most jobs at once (adaptive)")
    args = parser.parse_args()
    cluster = make_cluster(args.queue, args.cores, args.memory, args.walltime, args.gpus, args.venv)
    cluster.adapt(minimum_jobs=0, maximum_jobs=args.jobs)
    print(cluster.job_script())
    print(f"scheduler: {cluster.scheduler_address}", flush=True)
    input("press enter to stop the cluster\n")
    cluster.close()


if __name__ == "__main__":
    main()
