"""The web demo: a text prompt or an object image -> the generated views, their orbit video and the 3D
result in an interactive viewer, with every file to download.

`Demo` holds the loaded models and runs one generation (`Demo.generate`), callable without a browser;
`build_app` lays it out as a gradio Blocks. Bad inputs raise `gr.Error`, which gradio shows as a
message in the page.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home

import gradio as gr  # noqa: E402

from ..sampling.export import load_condition_image, save_generation  # noqa: E402
from ..sampling.system import VideoMV  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EMBEDDED_MODELS = (REPO / "data" / "embedded" / "t2mv", REPO / "data" / "embedded" / "i2mv")
MAX_STEPS = 200
TASK_TITLES = {"text": "Text to 3D", "image": "Image to 3D"}
EXAMPLE_PROMPTS = ["a red cube on top of a blue cylinder", "a green sphere", "a yellow cone"]
# System fonts only: the default theme would ask a font server on the internet.
THEME_FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


@dataclass
class DemoResult:
    """One generation's files. views: one PNG per view; model3d: what the 3D viewer shows (mesh.glb
    when the mesh step exists, else gaussians.ply; None without a reconstructor); downloads: every file."""

    folder: Path
    views: list[Path]
    video: Path
    model3d: Path | None
    downloads: list[Path]
    seconds: float
    settings: dict = field(default_factory=dict)


def mesh_exporter():
    """The library's mesh step, `videomv.mesh.export_mesh(gaussians, images, cameras, fovy, out_dir)
    -> {"mesh_glb": path, ...}`, when this install has it; None otherwise (the viewer then shows the
    Gaussians)."""
    try:
        from ..mesh import export_mesh
    except ImportError as err:
        if err.name != "videomv.mesh":  # the module is there but cannot load (a missing dependency)
            warnings.warn(f"the mesh step is unavailable: {err}", stacklevel=2)
        return None
    return export_mesh


def _number(value, name: str, low: float, high: float, integer: bool = False) -> float:
    """A setting from the page as a number in [low, high], or gr.Error naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high or (integer and number != int(number)):
        kind = "an integer" if integer else "a number"
        raise gr.Error(f"{name}: expected {kind} in [{low:g}, {high:g}], got {value!r}")
    return int(number) if integer else number


class Demo:
    """The loaded models (at most one per task) and where generations are written."""

    def __init__(self, models: dict[str, VideoMV], out_root: str | Path | None = None):
        if not models:
            raise ValueError("models: give at least one VideoMV model")
        for task, model in models.items():
            if model.settings.task != task:
                raise ValueError(f"models[{task!r}] is a {model.settings.task} model")
        self.models = models
        self.out_root = Path(out_root) if out_root else Path(tempfile.mkdtemp(prefix="videomv-demo-"))
        self.out_root.mkdir(parents=True, exist_ok=True)
        self.model_paths: dict[str, Path] = {}

    @classmethod
    def from_folders(cls, folders=EMBEDDED_MODELS, out_root=None, device: str = "cpu") -> "Demo":
        """Load VideoMV folders (a text and/or an image model); two of one task is an error."""
        models, paths = {}, {}
        for folder in map(Path, folders):
            model = VideoMV.from_pretrained(folder, device=device)
            task = model.settings.task
            if task in models:
                raise ValueError(f"{folder} and {paths[task]} are both {task} models; give at most one of each")
            models[task], paths[task] = model, folder
        demo = cls(models, out_root)
        demo.model_paths = paths
        return demo

    def defaults(self, task: str) -> dict:
        s = self.models[task].settings
        return dict(steps=s.num_inference_steps, guidance=s.guidance_scale, seed=0, elevation=s.elevation,
                    three_d_aware=self.models[task].reconstructor is not None)

    def generate(self, task: str, prompt: str | None = None, image: str | Path | None = None,
                 steps=50, guidance=None, seed=0, elevation=None, three_d_aware: bool = True, mesh: bool = True,
                 progress: bool = True) -> DemoResult:
        """Generate for a prompt (text model) or an image file (image model) and write every output
        into a new folder under `out_root`; `mesh`: also a textured mesh when the library has the
        mesh step. Raises gr.Error for bad inputs."""
        if task not in self.models:
            raise gr.Error(f"There is no {task} model in this demo (loaded: {', '.join(self.models)}).")
        model = self.models[task]
        s = model.settings
        steps = _number(steps, "Steps", 1, MAX_STEPS, integer=True)
        guidance = s.guidance_scale if guidance is None else _number(guidance, "Guidance", 0, 100)
        seed = _number(seed, "Seed", 0, 2**32 - 1, integer=True)
        elevation = s.elevation if elevation is None else _number(elevation, "Elevation", -89, 89)
        if three_d_aware and model.reconstructor is None:
            raise gr.Error("3D-aware sampling needs a reconstructor, and this model has none: turn 3D-aware off.")

        condition = None
        if task == "text":
            if not isinstance(prompt, str) or not prompt.strip():
                raise gr.Error("Prompt: it is empty. Describe an object, e.g. 'a red cube on top of a blue cylinder'.")
            prompt = prompt.strip()
        else:
            if image is None or (isinstance(image, str) and not image):
                raise gr.Error("Image: none given. Upload a square image of one object.")
            try:
                condition = load_condition_image(image, s.resolution)
            except ValueError as err:
                raise gr.Error(f"Image: {str(err).replace(str(image), Path(image).name)}") from None

        start = time.perf_counter()
        output = model(prompt=prompt if task == "text" else None, image=condition,
                       cameras=model.default_cameras(elevation=elevation), num_inference_steps=steps,
                       guidance_scale=guidance, seed=seed, three_d_aware=bool(three_d_aware), progress=progress)
        seconds = time.perf_counter() - start

        folder = Path(tempfile.mkdtemp(prefix=time.strftime(f"%Y%m%d-%H%M%S-{task}-"), dir=self.out_root))
        written = save_generation(output, folder, extra_settings={
            "model": str(self.model_paths.get(task, "")), "image": Path(image).name if image else None,
            "elevation": elevation, "seconds": round(seconds, 2), "source": "demo"})
        views = sorted(written["views"].glob("view_*.png"))
        views_zip = folder / "views.zip"
        with zipfile.ZipFile(views_zip, "w") as archive:
            for view in views:
                archive.write(view, f"views/{view.name}")
        downloads = [written["video"], written["grid"], views_zip]

        model3d = written.get("gaussians")
        export_mesh = mesh_exporter() if mesh else None
        if model3d is not None and export_mesh is not None:
            before = set(folder.iterdir())
            try:
                mesh_files = export_mesh(output.gaussians, output.images, output.cameras, output.settings["fovy"],
                                         folder, progress=progress)
            except (ValueError, RuntimeError) as err:  # the views and Gaussians are still worth showing
                gr.Warning(f"The mesh step failed, showing the Gaussians instead: {err}")
            else:
                model3d = Path(mesh_files["mesh_glb"])
                downloads += [model3d] + sorted(set(folder.iterdir()) - before - {model3d})
        if "gaussians" in written:
            downloads.append(written["gaussians"])
        downloads += [written["cameras"], written["settings"]]
        return DemoResult(folder=folder, views=views, video=written["video"], model3d=model3d, downloads=downloads,
                          seconds=seconds, settings=output.settings)


def _shown_path(path: Path | None) -> str:
    """A model folder as shown on the page: relative to the repository when inside it."""
    if path is None:
        return "(in memory)"
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _summary(result: DemoResult) -> str:
    s = result.settings
    aware = f"3D-aware at steps {s['aware_steps']}" if s["three_d_aware"] else "plain sampling"
    three_d = result.model3d.name if result.model3d else "no 3D result (the model has no reconstructor)"
    return (f"{len(result.views)} views sampled in {result.seconds:.1f} s: {s['num_inference_steps']} steps, guidance "
            f"{s['guidance_scale']:g}, seed {s['seed']}, {aware}; 3D: {three_d}. Folder: `{result.folder}`")


def build_app(demo: Demo) -> gr.Blocks:
    """The page: one tab per loaded model (input and settings), then the views, the orbit video, the
    3D viewer and the downloads."""

    def run(task, prompt, image, steps, guidance, seed, elevation, three_d_aware, mesh,
            progress=gr.Progress(track_tqdm=True)):
        progress(0, desc="Starting")
        result = demo.generate(task, prompt=prompt, image=image, steps=steps, guidance=guidance, seed=seed,
                               elevation=elevation, three_d_aware=three_d_aware, mesh=mesh)
        if result.model3d is None:
            gr.Warning("This model has no reconstructor, so there is no 3D result to show.")
        gallery = [(str(p), f"view {i}") for i, p in enumerate(result.views)]
        model3d = str(result.model3d) if result.model3d else None
        return gallery, str(result.video), model3d, [str(p) for p in result.downloads], _summary(result)

    with gr.Blocks(title="VideoMV", analytics_enabled=False) as app:
        gr.Markdown("# VideoMV\nConsistent multi-view generation and a 3D reconstruction from a text prompt or "
                    "an object image. Models: " + ", ".join(
                        f"{task} `{_shown_path(demo.model_paths.get(task))}`" for task in demo.models))
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                triggers = []
                with gr.Tabs():
                    for task in demo.models:
                        with gr.Tab(TASK_TITLES[task], id=task):
                            triggers.append((task, _task_inputs(demo, task)))
            with gr.Column(scale=2):
                views = gr.Gallery(label="Generated views", columns=6, height=560, object_fit="contain",
                                   elem_id="views", format="png")
                with gr.Row():
                    video = gr.Video(label="Orbit video", elem_id="video", autoplay=True, loop=True)
                    viewer = gr.Model3D(label="3D result (drag to rotate)", elem_id="viewer", height=320)
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
                status = gr.Markdown(elem_id="status")

        outputs = [views, video, viewer, downloads, status]
        for task, (button, prompt, image, settings) in triggers:
            no_input = gr.State(None)
            inputs = [gr.State(task), no_input if prompt is None else prompt, no_input if image is None else image,
                      *settings]
            button.click(run, inputs=inputs, outputs=outputs, show_progress_on=[views])
            if prompt is not None:
                prompt.submit(run, inputs=inputs, outputs=outputs, show_progress_on=[views])
    return app


def _task_inputs(demo: Demo, task: str):
    """The input, settings and button of one task's tab."""
    d = demo.defaults(task)
    prompt = image = None
    if task == "text":
        prompt = gr.Textbox(label="Prompt", placeholder=EXAMPLE_PROMPTS[0], elem_id="prompt", lines=2)
        gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt])
    else:
        image = gr.Image(label="Object image (square, object centred; RGBA is put on white)", type="filepath",
                         image_mode="RGBA", format="png", sources=["upload", "clipboard"], elem_id="image")
    button = gr.Button("Generate", variant="primary", elem_id=f"generate-{task}")
    with gr.Accordion("Settings", open=True):
        steps = gr.Slider(1, MAX_STEPS, value=d["steps"], step=1, label="Steps", elem_id=f"steps-{task}")
        guidance = gr.Slider(0, 20, value=d["guidance"], step=0.5, label="Guidance scale")
        seed = gr.Number(value=d["seed"], precision=0, minimum=0, label="Seed")
        elevation = gr.Slider(-30, 60, value=d["elevation"], step=1, label="Camera elevation (degrees)")
        aware = gr.Checkbox(value=d["three_d_aware"], label="3D-aware sampling (reconstruct during denoising)",
                            interactive=demo.models[task].reconstructor is not None, elem_id=f"aware-{task}")
        has_mesh = mesh_exporter() is not None and demo.models[task].reconstructor is not None
        mesh = gr.Checkbox(value=has_mesh, label="Textured mesh (.glb, .obj) from the Gaussians", visible=has_mesh,
                           elem_id=f"mesh-{task}")
    return button, prompt, image, [steps, guidance, seed, elevation, aware, mesh]


def launch(app: gr.Blocks, demo: Demo, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           block: bool = True):
    """Serve the page (queued, one generation at a time); the generations folder is served for downloads."""
    theme = gr.themes.Default(**THEME_FONTS)
    return app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=share, allowed_paths=[str(demo.out_root)], theme=theme,
        prevent_thread_lock=not block, show_error=False, footer_links=[], inbrowser=False)
