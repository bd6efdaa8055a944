"""The typed schema of params.yaml: one pydantic model per section, no defaults.

conf/ holds every default; these models only say which keys exist and what they hold, so a
misspelled or unknown key, a wrong type or a value outside a fixed set fails when params are loaded
(`reviewpipe.config.load_params`), naming the key and the conf file to fix. Code that wants typed
settings reads them with one constructor, `XParams.from_params(params)`.

Adding a setting: its default goes in conf/<section>/*.yaml (then `make params`), its field here.
A field's type is the contract for every conf/ option of its group (bert=cpu|gpu, ...).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A two-number range, e.g. scikit-learn's ngram_range [min_n, max_n].
Pair = Annotated[list[int], Field(min_length=2, max_length=2)]
ModelKind = Literal["baseline", "automl", "bert", "ensemble"]
MemberKind = Literal["baseline", "automl", "bert"]


class Settings(BaseModel):
    """A block of settings: unknown keys are errors; strict types (YAML `"5"` is not the number 5)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Section(Settings):
    """A top-level params.yaml section (`section` is its key)."""

    section: ClassVar[str]

    @classmethod
    def from_params(cls, params: Any) -> Self:
        """This section of `params` (params.yaml as loaded by reviewpipe.config), validated and typed."""
        from reviewpipe.config import section, to_dict, validation_error

        values = to_dict(section(params, cls.section))
        try:
            return cls.model_validate(values)
        except Exception as exc:
            raise validation_error(exc, cls.section, values) from exc


# ---- paths → data → lake → catalog → explore ----------------------------------------------------
class PathsParams(Section):
    """Where each layer lives; the other sections' locations are interpolated from these in conf/."""

    section = "paths"
    data: str
    prepared: str
    features: str
    models: str
    reports: str
    metrics: str


class BatchParams(Settings):
    """A raw batch the ingest stage appends after data.raw_uri (data.batches)."""

    uri: str
    ingested_at: str  # ISO 8601; later than the batch before


class DataParams(Section):
    section = "data"
    raw_uri: str
    ingested_at: str  # ISO 8601: raw_uri's rows' version time (declared, so reruns are byte-identical)
    batches: list[BatchParams]
    compression: str | None  # infer | gzip | none | any fsspec codec
    encoding: str
    min_age: int
    max_age: int
    chunk_rows: Annotated[int, Field(ge=1)]
    max_raw_bytes: Annotated[int, Field(ge=1)]
    max_field_bytes: Annotated[int, Field(ge=1)]
    duckdb_memory_limit: str
    age_bands: list[int]


class LakeParams(Section):
    section = "lake"
    uri: str
    partition_by: str
    retain_seconds: Annotated[int, Field(ge=0)]


class StorageParams(Section):
    section = "storage"
    endpoint_url: str | None
    profile: str | None
    region: str | None


class AwsParams(Section):
    """Where the AWS APIs are for the AWS switches (reviewpipe.aws); never credentials."""

    section = "aws"
    region: str | None
    profile: str | None
    endpoint_url: str | None
    role_arn: str


class AthenaParams(Settings):
    database: str
    workgroup: str
    output_location: str
    poll_delay_s: float
    timeout_s: float


class CatalogParams(Section):
    section = "catalog"
    engine: Literal["duckdb", "athena"]
    database: str
    description: str
    athena: AthenaParams


class ExploreParams(Section):
    section = "explore"
    sql_dir: str
    out_dir: str
    result_format: Literal["csv", "parquet"]


# ---- prepare → bias → features -----------------------------------------------------------------
class SplitParams(Settings):
    """Fractions only: a review's split is a function of (review_id, seed) (prep/split.py)."""

    train: float
    validation: float
    test: float


class PrepareParams(Section):
    section = "prepare"
    protocol: str
    min_category_reviews: int
    balance: Literal["none", "sentiment", "category_sentiment"]
    class_weights: bool
    seed: int
    split: SplitParams
    human_labels_dir: str
    out_dir: str
    metrics: str


class BiasParams(Section):
    section = "bias"
    label: str
    label_values: list[int | str]
    predicted_label: str
    facets: list[str]
    group_variable: str
    lp_p: float
    pre_training_metrics: list[str]
    post_training_metrics: list[str]
    prepared_dir: str
    out_dir: str


class FeaturesParams(Section):
    section = "features"
    checkpoint: str
    max_seq_length: int
    batch_size: int
    store_uri: str
    group_name: str
    description: str
    event_time: str | None
    recreate: bool
    metrics: str


# ---- models ------------------------------------------------------------------------------------
class NgramParams(Settings):
    ngram_range: Pair
    min_df: int
    max_features: int | None
    sublinear_tf: bool


class CharNgramParams(NgramParams):
    enabled: bool


class ClassifierParams(Settings):
    C: float
    class_weight: Literal["prepared", "balanced"] | None
    max_iter: int


class BaselineParams(Section):
    section = "baseline"
    model_path: str
    metrics_path: str
    text_column: str
    word: NgramParams
    char: CharNgramParams
    classifier: ClassifierParams


class AutomlNgramParams(Settings):
    ngram_range: Pair
    min_df: int
    max_features: int | None


class AutomlParams(Section):
    section = "automl"
    model_dir: str
    report_dir: str
    metrics_path: str
    time_limit: float
    seed: int
    presets: str
    eval_metric: str
    model_types: list[str]
    ngram: AutomlNgramParams
    class_weight: Literal["prepared"] | None
    keep_best_only: bool
    num_cpus: int | Literal["auto"]
    verbosity: int


class BertSageMakerParams(Settings):
    """bert.sagemaker: the training job of bert.launcher=sagemaker (reviewpipe.aws.training)."""

    image_uri: str
    instance_type: str
    instance_count: int
    s3_prefix: str
    spot: bool
    max_run_s: int
    max_wait_s: int
    volume_size_gb: int
    poll_delay_s: float
    job_name_prefix: str


class BertParams(Section):
    section = "bert"
    launcher: Literal["local", "sagemaker"]
    sagemaker: BertSageMakerParams | None  # null inside a training job, which runs the local launcher
    checkpoint: str
    pooling: Literal["mean", "cls"]
    max_seq_length: int
    reuse_input_ids: bool
    batch_size: int
    eval_batch_size: int
    length_bucketing: bool
    num_workers: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    class_weights: bool
    class_weights_uri: str
    freeze_word_embeddings: bool
    freeze_layers: Annotated[int, Field(ge=0)]
    gradient_clip_val: float | None
    max_epochs: int
    max_steps: int
    max_time: str | None  # DD:HH:MM:SS (quote it in YAML)
    early_stopping_patience: int
    accelerator: str
    devices: int | str | list[int]
    num_nodes: int
    strategy: str
    precision: str | int
    accumulate_grad_batches: int
    limit_train_batches: int | float  # Lightning: an int is a batch count, a float a share
    limit_val_batches: int | float
    val_check_interval: int | float
    log_every_n_steps: int
    ckpt_every_n_steps: int
    enable_progress_bar: bool | Literal["auto"]  # auto: a bar on a terminal, plain lines in a log
    progress_every_n_steps: int
    seed: int
    fast_dev_run: bool
    threads: int | None
    resume: bool
    out_dir: str
    ckpt_dir: str
    live_dir: str

    @model_validator(mode="after")
    def _job_settings_when_launched_on_sagemaker(self) -> BertParams:
        if self.launcher == "sagemaker" and self.sagemaker is None:
            raise ValueError("bert.launcher is sagemaker but bert.sagemaker is null; set its section")
        return self


# ---- evaluate → explain → register → package ----------------------------------------------------
class FairnessParams(Settings):
    features: list[str]
    min_group_rows: int


class EvaluationSetParams(Settings):
    split: str  # a prepared split: train | validation | test
    # balanced: <split>.parquet; natural: its rows in unbalanced.parquet; human: those a person labelled
    mix: Literal["balanced", "natural", "human"]
    role: Literal["select", "report"]  # select: register may choose and gate on it


class BootstrapParams(Settings):
    resamples: int
    confidence: float
    seed: int


class CalibrationParams(Settings):
    fit_on: str  # an evaluate.sets name (natural-mix validation)
    report_on: str
    review_threshold: float
    bins: int
    folds: int
    seed: int


class EvaluateParams(Section):
    section = "evaluate"
    models: list[ModelKind]
    model_paths: dict[str, str]
    out_dir: str
    live_dir: str
    sets: dict[str, EvaluationSetParams]
    bootstrap: BootstrapParams
    calibration: CalibrationParams
    batch_size: int
    post_training_bias: bool
    fairness: FairnessParams


class EnsembleParams(Section):
    section = "ensemble"
    members: list[MemberKind]
    model_paths: dict[str, str]
    C: float
    folds: int
    seed: int
    batch_size: int
    out_dir: str
    metrics_path: str


class ExplainParams(Section):
    section = "explain"
    models: list[Literal["baseline", "bert"]]
    model_paths: dict[str, str]
    out_dir: str
    top_k: int
    background_rows: int | None
    global_rows: int | None
    reviews: int
    bert_sample: int
    max_evals: int
    batch_size: int
    seed: int


class SageMakerRegistryParams(Settings):
    """register.sagemaker_registry: the Model Package Group mirror (reviewpipe.aws.model_registry)."""

    group: str
    s3_prefix: str
    image_uri: str
    instance_types: list[str]


class FairnessGateParams(Settings):
    features: list[str]
    gaps: list[Literal["accuracy", "recall", "dppl_vs_dpl"]]
    max_gap: float
    min_support: int
    confidence: float
    resamples: int
    seed: int


class RegisterParams(Section):
    section = "register"
    metrics_uri: str
    predictions_uri: str
    data_uri: str
    registry_uri: str
    decision_uri: str
    report_uri: str
    select_on: str  # an evaluate.sets name whose role is select
    metric: str
    min_metric: float
    fairness: FairnessGateParams
    serving_sets: list[str]  # evaluate.sets names the packaged champion is scored on
    max_serving_drop: float
    min_serving_agreement: float
    candidates: list[str]
    model_paths: dict[str, str]
    approval: Literal["auto", "manual"]  # auto: a version that passes the gate is Approved at once
    fail_on_reject: bool
    sagemaker: bool
    sagemaker_registry: SageMakerRegistryParams


class PackageOnnxParams(Settings):
    export: bool
    calibration_uri: str
    calibration_rows: int
    quant_format: Literal["qdq", "qoperator"]


class SageMakerTargetParams(Settings):
    image: str
    python: str
    provides: dict[str, str]  # distribution -> the exact version the image holds


class PackageParams(Section):
    section = "package"
    out_dir: str
    registry_uri: str
    versions: dict[str, Literal["deployable"] | int]  # tarball name -> registry version
    max_length: int | None
    calibration_uri: str | None  # evaluate's calibration.json; null: ship raw probabilities
    onnx: PackageOnnxParams
    sagemaker: SageMakerTargetParams


# ---- serve → deploy → monitor → review ----------------------------------------------------------
class ServeAdminParams(Settings):
    enabled: bool
    token_file: str | None  # the token itself never lives in params


class CaptureParams(Settings):
    enabled: bool
    destination: str
    endpoint_name: str
    sampling_percentage: float
    flush_interval_s: float
    buffer_records: int
    buffer_bytes: int
    json_content_types: list[str]
    csv_content_types: list[str]


class ServeParams(Section):
    section = "serve"
    host: str
    port: int
    max_batch_size: int
    max_wait_ms: float
    max_payload_bytes: int
    max_inputs_per_request: int
    quantize: Literal["none", "int8", "int8-dynamic"]
    backend: Literal["torch", "onnx"]
    num_threads: int
    workers: int
    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    idle_timeout_s: float
    drain_timeout_s: float
    max_package_bytes: int
    allowed_hosts: list[str]
    admin: ServeAdminParams
    capture: CaptureParams


class VariantParams(Settings):
    name: str
    package: str
    weight: float
    # SageMaker only: this variant's instances (absent: deploy.sagemaker's instance_type / _count).
    instance_type: str | None = None
    instance_count: int | None = None


class DeployLocalParams(Settings):
    run_dir: str
    host: str
    port: int
    start_timeout_s: float
    stop_timeout_s: float


class DeploySageMakerParams(Settings):
    region: str | None
    profile: str | None
    s3_uri: str
    role_arn: str
    image_uri: str
    instance_type: str
    instance_count: int
    endpoint_url: str | None
    s3_endpoint_url: str | None
    wait_delay_s: float
    wait_max_attempts: int
    delete_replaced: bool
    tags: dict[str, str]
    # what the container's code/inference.py runs (its Environment); the image has no onnxruntime
    backend: Literal["torch"]
    quantize: Literal["none", "int8-dynamic"]


class _DeployCommon(Section):
    section = "deploy"
    endpoint_name: str
    state_path: str
    variants: list[VariantParams]


class LocalDeployParams(_DeployCommon):
    """deploy=local (conf/deploy/local.yaml)."""

    target: Literal["local"]
    local: DeployLocalParams


class SageMakerDeployParams(_DeployCommon):
    """deploy=sagemaker (conf/deploy/sagemaker.yaml)."""

    target: Literal["sagemaker"]
    sagemaker: DeploySageMakerParams


class TransformParams(Section):
    """`reviewpipe predict --engine sagemaker` (reviewpipe.aws.transform)."""

    section = "transform"
    s3_prefix: str
    image_uri: str
    instance_type: str
    instance_count: int
    max_payload_mb: int
    max_concurrent_transforms: int
    poll_delay_s: float
    timeout_s: float
    quantize: Literal["none", "int8-dynamic"]  # the container runs torch (no onnxruntime)


class PredictorParams(Settings):
    """The model monitor / review predict with (monitoring/champion.py): the deployed champion, a
    configured package or model (`path`), or none."""

    source: Literal["deployed", "path", "none"]
    variant: str | None
    kind: Literal["package", "baseline", "automl", "bert"]
    path: str | None
    batch_size: int


class MonitorConstraintsParams(Settings):
    completeness_tolerance: float
    max_empty_text_ratio: float
    max_unseen_category_ratio: float


class DriftParams(Settings):
    numeric_features: list[str]
    categorical_features: list[str]
    psi_threshold: float | None  # null disables a metric
    ks_threshold: float | None
    chi2_p_value_threshold: float | None
    comparison_method: Literal["robust", "simple"]
    robust_confidence: float


class QualityParams(Settings):
    window: str
    max_drop: float
    min_rows: int
    comparison_method: Literal["robust", "simple"]
    confidence: float
    bootstrap_resamples: int
    ground_truth: list[Literal["human", "ratings"]]


class MonitorParams(Section):
    section = "monitor"
    baseline_uri: str
    baseline_split: str | None
    quality_split: str | None
    label_column: str
    out_dir: str
    max_baseline_rows: int | None
    seed: int
    text_column: str
    category_column: str
    id_column: str
    model: PredictorParams
    buckets: int
    sketch_size: int
    constraints: MonitorConstraintsParams
    drift: DriftParams
    quality: QualityParams
    fail_on_violation: bool


class ReviewParams(Section):
    section = "review"
    confidence_threshold: float
    queue_dir: str
    labels_dir: str
    state_dir: str
    claim_ttl_s: float
    show_model_guess: bool
    host: str
    port: int
    session_ttl_s: float
    allowed_hosts: list[str]
    model: PredictorParams
    text_column: str
    id_column: str


# ---- tune ---------------------------------------------------------------------------------------
class DimensionParams(Settings):
    """One search-space entry; keys a dimension does not use are absent (tuning/space.py checks them)."""

    type: Literal["float", "int", "categorical"] | None = None
    low: float | None = None
    high: float | None = None
    log: bool | None = None
    step: float | None = None
    choices: list[Any] | None = None


class BaselineObjectiveParams(Settings):
    seed: int
    fractions: list[float]  # learning-curve steps
    max_train_rows: int | None
    max_validation_rows: int | None


class BertObjectiveParams(Settings):
    seed: int
    max_train_rows: int | None
    max_validation_rows: int | None
    fixed: dict[str, Any]  # bert settings every trial uses


class _TuneCommon(Section):
    section = "tune"
    trials: int
    sampler: Literal["tpe", "random"]
    pruner: Literal["median", "none"]
    seed: int
    timeout_s: float | None
    startup_trials: int
    warmup_steps: int
    data_dir: str
    out_dir: str
    score_current: bool
    space: dict[str, DimensionParams]


class BaselineTuneParams(_TuneCommon):
    """tune=baseline (conf/tune/baseline.yaml)."""

    model: Literal["baseline"]
    objective: BaselineObjectiveParams


class BertTuneParams(_TuneCommon):
    """tune=bert (conf/tune/bert.yaml)."""

    model: Literal["bert"]
    objective: BertObjectiveParams


DeployParams = Annotated[LocalDeployParams | SageMakerDeployParams, Field(discriminator="target")]
TuneParams = Annotated[BaselineTuneParams | BertTuneParams, Field(discriminator="model")]


class Params(Settings):
    """All of params.yaml. A section whose conf group has options of different shapes (deploy, tune)
    is a union told apart by one key (deploy.target, tune.model)."""

    paths: PathsParams
    data: DataParams
    lake: LakeParams
    storage: StorageParams
    aws: AwsParams
    catalog: CatalogParams
    explore: ExploreParams
    prepare: PrepareParams
    bias: BiasParams
    features: FeaturesParams
    baseline: BaselineParams
    automl: AutomlParams
    bert: BertParams
    ensemble: EnsembleParams
    evaluate: EvaluateParams
    explain: ExplainParams
    register_: RegisterParams = Field(alias="register")  # `register` is a BaseModel classmethod
    package: PackageParams
    serve: ServeParams
    transform: TransformParams
    deploy: DeployParams
    monitor: MonitorParams
    review: ReviewParams
    tune: TuneParams
