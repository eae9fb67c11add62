"""Training: a generic accelerate loop (``engine``) and the tasks it runs.

Modules, one concept each:
  config      OmegaConf YAML + ``key=value`` overrides; resolved config saved as ``config.yaml``
  engine      the loop: DDP, mixed precision, accumulation, clipping, LR schedule, EMA, NaN guard,
              logging (tensorboard / wandb, ``WANDB_MODE=offline`` works without network), tqdm
  checkpoint  safetensors + JSON checkpoints (no pickle, unlike accelerate's save_state), atomic,
              keep-last-K, ``resume=latest|PATH``
  batches     reproducible, sharded, resumable batch order
  ema         exponential moving average of weights
  diffusion   training noise schedules (eps / v + zero-terminal SNR), targets, min-SNR-γ loss
  datasets    datasets from the config, toy world built on first use, view windows, 2D mixing
  mv          stage 1: camera-conditioned multi-view UNet (text or image)
  recon       stage 2: the reconstructor fine-tuned on stage-1 outputs
  vae         the toy AutoencoderKL

Commands::

    python scripts/train_vae.py --config configs/toy_vae.yaml
    accelerate launch scripts/train_mv.py --config configs/toy_t2mv.yaml max_steps=2000 output_dir=runs/t
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml scripts/train_mv.py \\
        --config configs/t2mv_modelscope.yaml data.root=/data/gobjaverse

Several CPU processes (gloo): accelerate 1.x starts them for ``--cpu`` only through MPI, so use
``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 scripts/train_mv.py ...``.
On a busy machine, ``OMP_NUM_THREADS=1`` is often much faster for the tiny toy models.
"""
