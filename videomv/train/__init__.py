"""Training: a generic accelerate loop (``engine``) and the tasks it runs.

Modules, one concept each:
  schema      typed configs per task (dataclasses): defaults, types, ranges
  config      OmegaConf YAML with ``base_config`` overlays + ``key=value`` overrides, struct mode
              (unknown keys fail with the closest valid names); resolved config saved as ``config.yaml``
  engine      the loop as a ``Trainer``: DDP, mixed precision, accumulation, clipping, LR schedule, EMA,
              NaN guard, logging (tensorboard / wandb, ``WANDB_MODE=offline`` works without network), tqdm,
              output-folder protection, process-group timeout, skipped-data report
  checkpoint  safetensors + JSON checkpoints (no pickle, unlike accelerate's save_state), atomic,
              keep-last-K, ``resume=latest|auto|PATH``, fallback past a damaged newest checkpoint
  batches     reproducible, sharded, resumable batch order
  ema         exponential moving average of weights
  diffusion   training noise schedules (eps / v + zero-terminal SNR), noise, targets
  losses      the training objectives (diffusion MSE with min-SNR-γ, KL, photometric), PSNR
  datasets    datasets from the config, view windows, 2D mixing, the latent cache
  mv          stage 1: camera-conditioned multi-view UNet (text or image)
  recon       stage 2: the reconstructor fine-tuned on stage-1 outputs
  vae         the toy AutoencoderKL

Commands::

    python scripts/train_vae.py --config configs/toy_vae.yaml
    accelerate launch scripts/train_mv.py --config configs/toy_t2mv.yaml max_steps=2000 output_dir=runs/t
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml scripts/train_mv.py \\
        --config configs/t2mv_modelscope.yaml data.root=/data/gobjaverse

A fresh run refuses an ``output_dir`` that holds another run (``overwrite=true`` replaces it);
``resume=latest`` continues the newest checkpoint there, ``resume=auto`` too or starts fresh.

Several CPU processes (gloo): accelerate 1.x starts them for ``--cpu`` only through MPI, so use
``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 scripts/train_mv.py ...``.
On a busy machine, ``OMP_NUM_THREADS=1`` is often much faster for the tiny toy models.
"""
