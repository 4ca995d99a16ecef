"""`make mutate`: break one behaviour that matters at a time and check that the tests notice.

Each mutation is a textual replacement that must match exactly once in its file (a mutation whose code has
moved fails loudly instead of testing nothing). It is applied to a fresh temporary copy of the tree, never
to the real files, and the tests most likely to catch it run there. A mutation they pass is a gap in the
tests. Before the mutations, the same selections run once on an unmodified copy: a test that fails there
would "catch" every mutation.

    python tests/mutate.py              # every mutation; exit 1 when one survives
    python tests/mutate.py --list       # their names
    python tests/mutate.py resume 409   # only those whose name contains one of these words

Adding a mutation is one entry in MUTATIONS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPY_IGNORES = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".venv-fides",  # 800 MB; no mutation runs tests/e2e/test_fides.py
    ".mcu",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "*.egg-info",
    "results",
    ".cache",
)
TIMEOUT_SECONDS = 900  # per pytest run; a mutation that hangs the tests counts as caught


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids or files
    also: tuple[tuple[str, str], ...] = ()  # further (old, new) replacements in the same file


CURVE = "tests/unlearning/test_curve.py"
SWEEPER = "tests/worker/test_sweeper.py"
EVIDENCE = "tests/worker/test_evidence.py"
MCU = "tests/unlearning/test_mcu.py"
TRANSFORMS = "tests/unlearning/test_transforms.py"
MODEL_INPUTS = "tests/api/test_model_inputs.py"
WORKER_INPUTS = "tests/worker/test_model_inputs.py"
DISTRIBUTED = "tests/unlearning/test_distributed.py"
BASE_METHODS_TESTS = "tests/unlearning/test_base_methods.py"
METRICS = "tests/unlearning/test_metrics.py"
TELEMETRY = "tests/telemetry/test_telemetry.py"
FAST_VALIDATION = "tests/e2e/test_fast_validation.py"
FAILED_ALLOCATION = (
    "tests/worker/test_validation.py::test_a_failed_allocation_counts_as_the_memory_budget_however_the_library_"
    "reports_it"
)
EVERY_ROW = (
    "tests/unlearning/test_pipeline.py::test_grid_points_are_measured_on_samples_and_the_recommended_and_"
    "published_points_on_every_row"
)
ERASURE = (
    "tests/api/test_erasure.py::test_erased_rows_are_refused_then_left_out_and_named_rows_are_forgotten[sqlite]",
)
LIFECYCLE = ("tests/domain/test_lifecycle.py",)
ERASURE_15 = "tests/worker/test_erasure.py::test_erased_rows_leave_the_shards_once_every_model_erased_them"
FLOWS = "tests/api/test_flows.py"
DIAGNOSTICS = (
    "tests/api/test_request_diagnostics.py::test_get_shows_timings_last_heartbeat_and_training_once_the_job_"
    "made_them[sqlite]"
)
STRICT = "tests/api/test_strict_input.py::"
TAMPER = "tests/api/test_evidence_tamper.py"
ROWS = "tests/unlearning/test_rows.py"
ROWS_ENCODED = "tests/unlearning/test_rows.py::test_encoded_rows_are_what_a_users_pillow_and_torchvision_pipeline_gives"
ENCODED_API = (
    "tests/api/test_encoded_datasets.py::test_a_row_that_is_not_an_accepted_image_is_a_422_naming_shard_and_row["
)
CLIENT_FILES = "tests/mcu_client/test_dataset_files.py::"
INPUTS = "tests/worker/test_encoded_inputs.py::"
INPUTS_TENSOR = INPUTS + "test_a_tensor_dataset_is_loaded_through_the_transform_and_sized_after_it"
ENCODED_ERASURE = INPUTS + "test_an_encoded_shard_rewritten_without_rows_keeps_every_other_row_and_none_of_theirs"
META = "tests/api/test_meta.py::"
SUBJECT_ERASURES = "tests/api/test_subject_erasures.py::"
APPROVAL = "tests/api/test_approval.py::"
STREAMED = "tests/worker/test_erasure.py"  # the module runs streamed; its last tests compare with in-memory

HELD = (
    "tests/api/test_concurrency.py::test_a_route_holds_one_connection_and_only_while_it_runs_sql"
    "[sqlite-"
)  # + the route's case

MUTATIONS = [
    # Connections held only while SQL runs (issue 29): each puts one back where no SQL runs.
    Mutation(
        "held connection: a route's session stays open until the response is sent",
        "api/deps.py",
        "value.close()  # the connection goes back",
        "pass  # the connection goes back",
        (HELD + "list requests]", HELD + "report (signed)]"),
    ),
    Mutation(
        "database threads: routes run on AnyIO's 40 threads, fighting over the GIL",
        "api/deps.py",
        "return next((value.info[LIMITER] for value in values if isinstance(value, Session)), None)",
        "return None",
        ("tests/api/test_concurrency.py::test_many_concurrent_lists_reports_and_events_all_answer[sqlite]",),
    ),
    Mutation(
        "held connection: weights streamed from the store with the session open",
        "api/routes/models.py",
        "    session.close()  # the row is read",
        "    pass  # the row is read",
        (HELD + "weights (streamed)]",),
    ),
    Mutation(
        "held connection: a model's upload inside its dataset read",
        "api/routes/models.py",
        "db.commit()  # the read ends",
        "pass  # the read ends",
        (HELD + "model upload (idempotent)]",),
    ),
    Mutation(
        "held connection: the idempotency lookup held through an upload",
        "api/idempotency.py",
        "session.commit()  # the lookup's transaction ends",
        "pass  # the lookup's transaction ends",
        (HELD + "dataset upload (idempotent)]",),
    ),
    Mutation(
        "held connection: a router of session routes without SessionRoute",
        "api/routes/signing.py",
        ", route_class=SessionRoute)",
        ")",
        ("tests/api/test_concurrency.py::test_every_route_that_takes_a_session_closes_it_when_it_returns[sqlite]",),
    ),
    # The five the whole suite once let through, and two it caught only indirectly.
    Mutation(
        "curve coefficient 2t(1-t) becomes t(1-t)",
        "unlearning/curve.py",
        "2.0 * t * (1.0 - t)",
        "t * (1.0 - t)",
        (f"{CURVE}::test_interior_points_follow_the_bezier_formula",),
    ),
    Mutation(
        "adaptive beta forced to 0 in curve training",
        "unlearning/mcu.py",
        "return adaptive_beta(retain_acc, forget_acc, targets)",
        "return 0.0",
        (f"{MCU}::test_curve_training_applies_the_adaptive_beta",),
    ),
    Mutation(
        "MIA efficacy measured on retain rows, not forget rows",
        "unlearning/metrics.py",
        "        called_nonmember(members, nonmembers, forget_conf),",
        "        called_nonmember(members, nonmembers, retain_conf),",
        ("tests/unlearning/test_metrics.py",),
    ),
    Mutation(
        "recommended t always 1.0",
        "unlearning/spectrum.py",
        "return float(search[within[-1]])",
        "return 1.0",
        (f"{CURVE}::test_recommended_t_is_the_known_minimum_and_the_window_its_nearest_point",),
    ),
    Mutation(
        "resume ignores the checkpoint (restarts at epoch 0; ranks restarted after a death too)",
        "worker/artifacts.py",
        "    resume = Checkpoint.from_bytes(checkpoint) if checkpoint else None",
        "    resume = None",
        ("tests/worker/test_resume.py", "tests/e2e/test_data_parallel.py"),
    ),
    Mutation(
        "already-erased samples not dropped (no 409)",
        "domain/forget.py",
        "remaining = forget.without(set(erased))",
        "remaining = forget",
        ERASURE,
    ),
    Mutation(
        "sample ids resolved one position off",
        "domain/forget.py",
        "ForgetSet({r.position: r.sample_id for r in train}, erased_from_storage)",
        "ForgetSet({r.position + 1: r.sample_id for r in train}, erased_from_storage)",
        ERASURE,
    ),
    # The algorithm.
    Mutation(
        "BatchNorm statistics recomputed from forget rows",
        "unlearning/metrics.py",
        "bn=data.retain.sample(",
        "bn=data.forget.sample(",
        (f"{CURVE}::test_batchnorm_statistics_come_from_retain_data_only",),
    ),
    # Evaluation at scale (issue 21): stratified samples for the grid, every row for what is recommended and published.
    Mutation(
        "evaluation samples ignore the classes",
        "unlearning/metrics.py",
        "return subset.take(chosen[torch.randperm(len(chosen), generator=generator)])",
        "return subset.sample(count, generator)",
        (f"{METRICS}::test_stratified_samples_keep_class_shares_exactly_and_are_seeded",),
    ),
    Mutation(
        "class quotas rounded down (the sample falls short of its count)",
        "unlearning/metrics.py",
        "[: count - sum(quotas)]",
        "[:0]",
        (f"{METRICS}::test_class_quotas_sum_to_the_count_by_largest_remainder",),
    ),
    Mutation(
        "a small class left without a row",
        "unlearning/metrics.py",
        "    if count >= len(sizes):\n",
        "    if False:\n",
        (f"{METRICS}::test_class_quotas_sum_to_the_count_by_largest_remainder",),
    ),
    Mutation(
        "MIA efficacy's standard error over the test rows, not the forget rows",
        "unlearning/metrics.py",
        '"mia_efficacy": "forget"',
        '"mia_efficacy": "test"',
        (f"{METRICS}::test_std_errors_are_binomial_over_the_rows_each_metric_was_measured_on",),
    ),
    Mutation(
        "every standard error over the retain rows",
        "unlearning/metrics.py",
        "std_error(value, rows[SPLIT_OF[name]])",
        "std_error(value, rows['retain'])",
        (f"{METRICS}::test_std_errors_are_binomial_over_the_rows_each_metric_was_measured_on",),
    ),
    Mutation(
        "the full sets train the attack on every row",
        "unlearning/metrics.py",
        "            attack=self.attack_rows(),\n",
        "",
        (f"{METRICS}::test_full_sets_hold_every_row_and_train_the_attack_on_the_sample",),
    ),
    Mutation(
        "the recommended point measured on the grid's sample",
        "unlearning/pipeline.py",
        "measure_point(curve, recommended_t, data, full_sets, cfg)",
        "measure_point(curve, recommended_t, data, sets, cfg)",
        (EVERY_ROW,),
    ),
    Mutation(
        "a published version measured on the grid's sample",
        "unlearning/pipeline.py",
        "    sets = EvalSets.draw(data, cfg.eval, cfg.seed).every_row(data)\n    metrics = measure_point(",
        "    sets = EvalSets.draw(data, cfg.eval, cfg.seed)\n    metrics = measure_point(",
        (EVERY_ROW,),
    ),
    Mutation(
        "the report's published rows left out",
        "domain/evidence.py",
        '"rows": {"published": published.metrics.get("rows")',
        '"rows": {"published": None',
        (f"{EVIDENCE}::test_a_forgetting_request_succeeds_with_a_signed_report_that_detects_any_change",),
    ),
    Mutation(
        "the API's curve without the recommended point",
        "models/tables.py",
        'self.curve_summary.get("recommended_point")',
        "None",
        (f"{EVIDENCE}::test_a_forgetting_request_succeeds_with_a_signed_report_that_detects_any_change",),
    ),
    Mutation(
        "masked-out tensors of theta_c get gradients",
        "unlearning/mcu.py",
        "trainable.get(n, curve.control[n])",
        "trainable.get(n, curve.control[n].requires_grad_(True))",
        ("tests/unlearning/test_mask.py::test_frozen_tensors_get_no_gradient_and_do_not_move",),
    ),
    Mutation(
        "element mask not applied to gradients",
        "unlearning/mcu.py",
        "grad_masks=grad_masks,",
        "grad_masks=None,",
        ("tests/unlearning/test_mask.py::test_element_mask_freezes_elements_inside_a_tensor",),
    ),
    Mutation(
        "training batches without forget rows",
        "unlearning/training.py",
        "while len(forget_order) < n_batches:",
        "while False:",
        (f"{MCU}::test_every_training_batch_holds_forget_samples",),
    ),
    Mutation(
        "cancel not checked between batches",
        "unlearning/training.py",
        "            hooks.check_cancel()\n",
        "",
        (f"{MCU}::test_cancel_stops_within_one_batch",),
    ),
    Mutation(
        "SGD momentum not restored on resume",
        "unlearning/mcu.py",
        'optimizer.state[p]["momentum_buffer"] = in_layout_of(p, resume.momentum[name])',
        "pass",
        (f"{MCU}::test_interrupted_and_resumed_training_equals_uninterrupted",),
    ),
    # The service.
    Mutation(
        "request list loads each row's curve points with a query of its own",
        "models/tables.py",
        'viewonly=True, lazy="selectin")',
        'viewonly=True, lazy="select")',
        ("tests/api/test_queries.py::test_lists_cost_the_same_statements_for_2_rows_as_for_12[sqlite]",),
    ),
    Mutation(
        "state change without compare-and-set on the state",
        "domain/lifecycle.py",
        "DeletionRequest.id == request_id, DeletionRequest.state.in_(sources), *where",
        "DeletionRequest.id == request_id, *where",
        (
            f"{FLOWS}::test_deletion_request_lifecycle_through_the_api[sqlite]",
            f"{FLOWS}::test_cancel_of_a_queued_request_is_immediate[sqlite]",
        ),
    ),
    Mutation(
        "follow-ups sent as the commit starts, not after it succeeded",
        "domain/lifecycle.py",
        '@event.listens_for(factory, "after_commit")',
        '@event.listens_for(factory, "before_commit")',
        LIFECYCLE,
    ),
    Mutation(
        "follow-ups of a rolled-back change kept",
        "domain/lifecycle.py",
        "session.info.pop(_PENDING, None)",
        "session.info.get(_PENDING)",
        LIFECYCLE,
    ),
    Mutation(
        "validation ignores the declared preprocessing",
        "worker/inputs.py",
        'if preprocessing["mean"] is None:',
        "if True:",
        ("tests/worker/test_validation.py::test_the_declared_preprocessing_is_what_the_model_is_measured_under",),
    ),
    Mutation(
        "jobs ignore the declared preprocessing",
        "worker/inputs.py",
        "load_dataset(services, session, dataset_row, model.preprocessing,",
        'load_dataset(services, session, dataset_row, {"mean": None},',
        ERASURE,
    ),
    Mutation(
        "strict weight loading off",
        "worker/model_check.py",
        "    if errors:\n",
        "    if False:\n",
        ("tests/api/test_bad_input.py::test_model_weights_missing_one_key_are_invalid[sqlite]",),
        also=(("strict=True)", "strict=False)"),),
    ),
    Mutation(
        "erased rows back in later jobs' retain set",
        "worker/inputs.py",
        "keep = ~torch.isin(positions, erased)",
        "keep = torch.ones_like(positions, dtype=torch.bool)",
        ERASURE,
    ),
    Mutation(
        "publishing records no erased rows",
        "worker/publish.py",
        "record_erased(session, model.id, erasing.forget_positions, erasing.id)",
        "pass",
        ERASURE,
    ),
    Mutation(
        "API key scope not checked",
        "api/auth.py",
        'return scope in self.scopes or "admin" in self.scopes',
        "return True",
        ("tests/api/test_auth.py::test_key_without_the_scope_is_403[sqlite]",),
    ),
    Mutation(
        "callback allow-list bypassed",
        "domain/requests.py",
        "if not settings.callback_host_allowed(url):",
        "if False:",
        (
            "tests/api/test_bad_input.py::test_deletion_request_problem_is_422"
            "[sqlite-callback_url host off the allow-list]",
        ),
    ),
    Mutation(
        "an outage counts as a dead validation attempt",
        "worker/validation.py",
        '        _uncount_attempt(services, model_id)\n        return "interrupted"\n',
        '        return "interrupted"\n',
        ("tests/worker/test_validation.py::test_an_outage_does_not_use_up_the_attempts",),
    ),
    Mutation(
        "scratch files of a killed upload removed only at a restart",
        "storage/base.py",
        "        sweep_scratch_files(directory, recursive=False)\n",
        "        pass\n",
        ("tests/storage/test_stores.py::test_making_a_scratch_file_sweeps_what_a_killed_process_left",),
    ),
    Mutation(
        "a stored malformed callback URL is tried (and re-sent) instead of refused",
        "worker/callbacks.py",
        "    if malformed(url):\n",
        "    if False:\n",
        ("tests/worker/test_callbacks.py::test_a_stored_malformed_callback_url_is_refused_recorded_and_never_resent",),
    ),
    Mutation(
        "idempotency key not remembered (a replay creates a second request)",
        "api/idempotency.py",
        "    if key is not None:\n        session.add(",
        "    if False:\n        session.add(",
        (f"{FLOWS}::test_idempotency_key_replays_and_rejects_other_bodies[sqlite]",),
    ),
    # Compliance evidence (issue 14), rate limits and callbacks (issue 11).
    Mutation(
        "auto selection publishes a point that fails the erasure criterion",
        "domain/erasure.py",
        "    if recommended.met:\n",
        "    if True:\n",
        (f"{EVIDENCE}::test_auto_selection_withholds_a_curve_that_never_forgets",),
    ),
    Mutation(
        "a manual selection of a failing point needs no acknowledgement",
        "domain/requests.py",
        "if not judgement.met and not acknowledged:",
        "if False:",
        (f"{EVIDENCE}::test_a_failing_point_needs_an_acknowledgement_and_the_report_says_so",),
    ),
    Mutation(
        "an event's hash does not cover its actor",
        "models/audit.py",
        '        "actor": actor,\n        "detail": detail,',
        '        "detail": detail,',
        (f"{EVIDENCE}::test_the_audit_chain_names_an_edited_or_deleted_event",),
    ),
    Mutation(
        "the audit chain's links are not checked",
        "models/audit.py",
        "if event.prev_hash != current.newest:",
        "if False:",
        (f"{EVIDENCE}::test_the_audit_chain_names_an_edited_or_deleted_event",),
    ),
    Mutation(
        "the report's signature does not cover the report",
        "domain/signing.py",
        "value = self.private_key.sign(canonical_json(report))",
        'value = self.private_key.sign(b"{}")',
        (f"{EVIDENCE}::test_a_forgetting_request_succeeds_with_a_signed_report_that_detects_any_change",),
    ),
    # Evidence that cannot be forged (issue 29): verifiers trust only known keys, parse strictly, check seals.
    Mutation(
        "duplicate keys accepted in a signed report",
        "domain/inputs.py",
        "        if key in result:\n",
        "        if False:\n",
        (
            f"{TAMPER}::test_a_forged_report_fails_verification_naming_what_is_wrong"
            "[sqlite-a duplicate key before the signed one]",
        ),
    ),
    Mutation(
        "the key embedded in a report is trusted",
        "mcu_client/evidence.py",
        "    if key_id not in trusted:\n",
        "    trusted = {key_id: signature['public_key']}\n    if False:\n",
        (f"{TAMPER}::test_a_forged_report_fails_verification_naming_what_is_wrong[sqlite-re-signed with another key]",),
    ),
    Mutation(
        "reports verify without a trusted key exits 0",
        "cli/evidence.py",
        "INVALID, UNTRUSTED = 1, 3",
        "INVALID, UNTRUSTED = 1, 0",
        (f"{TAMPER}::test_without_a_trusted_key_no_report_is_valid[sqlite]",),
    ),
    Mutation(
        "an audit chain's length and head are not compared with its seal",
        "models/audit.py",
        "if (chain.length, chain.head) != (chain.events, chain.newest):",
        "if False:",
        (
            f"{TAMPER}::test_a_tampered_audit_chain_is_named_refused_a_report_and_not_laundered"
            "[sqlite-delete the newest event]",
        ),
    ),
    Mutation(
        "an audit chain's seal is not verified",
        "models/audit.py",
        "if key is None or not seal_verifies(key,",
        "if key is None and not seal_verifies(key,",
        (
            f"{TAMPER}::test_a_tampered_audit_chain_is_named_refused_a_report_and_not_laundered"
            "[sqlite-edit a row, recompute every later hash and the stored head]",
        ),
    ),
    Mutation(
        "the next event re-seals a broken audit chain",
        "models/audit.py",
        "    if new or (\n        anchor.chain_head == prev",
        "    if True or (\n        anchor.chain_head == prev",
        (
            f"{TAMPER}::test_a_tampered_audit_chain_is_named_refused_a_report_and_not_laundered"
            "[sqlite-delete the newest event and seal with another key]",
        ),
    ),
    Mutation(
        "a report is signed over a broken audit chain",
        "domain/evidence.py",
        "        if broken:\n            raise Problem(\n                409",
        "        if False:\n            raise Problem(\n                409",
        (
            f"{TAMPER}::test_a_tampered_audit_chain_is_named_refused_a_report_and_not_laundered"
            "[sqlite-delete the whole chain]",
        ),
    ),
    Mutation(
        "no rate limit per API key",
        "api/ratelimit.py",
        "if self.per_key is not None and token:",
        "if False:",
        ("tests/api/test_rate_limits.py::test_each_key_has_its_own_budget",),
    ),
    Mutation(
        "a callback resolves the name again instead of calling the vetted address",
        "worker/callbacks.py",
        "if address is not None and address != parts.hostname:",
        "if False:",
        ("tests/worker/test_callbacks.py::test_the_call_goes_to_the_address_vetted_not_to_a_second_dns_answer",),
    ),
    Mutation(
        "a delivered callback is not recorded (the outbox sends it again)",
        "worker/callbacks.py",
        "delivered_at=utcnow() if ok else None",
        "delivered_at=None",
        ("tests/worker/test_reconciler.py::test_a_callback_owed_during_a_broker_outage_is_sent_and_delivered_once",),
    ),
    # The strict input layer (issue 29: domain/inputs.py and where input enters).
    Mutation(
        "strict input: lone surrogates allowed in text",
        "domain/inputs.py",
        '_SURROGATES = "\\ud800-\\udfff"',
        '_SURROGATES = "\\x00"',
        (
            f"{STRICT}test_bad_text_in_a_deletion_request_is_422[sqlite-external_id-lone high surrogate]",
            f"{STRICT}test_bad_text_in_a_deletion_request_is_422[postgres-sample_ids-lone low surrogate]",
        ),
    ),
    Mutation(
        "strict input: control characters allowed in single-line text",
        "domain/inputs.py",
        '_LINE_BAD = re.compile(f"[\\x00-\\x1f',
        '_LINE_BAD = re.compile(f"[\\x00',
        (f"{STRICT}test_bad_text_in_a_model_form_is_422[sqlite-name-escape]",),
    ),
    Mutation(
        "strict input: non-finite and huge numbers allowed",
        "domain/inputs.py",
        "if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > MAX_NUMBER:",
        "if False:",
        (f"{STRICT}test_bad_architecture_kwargs_are_422[sqlite-1e30]",),
    ),
    Mutation(
        "strict input: JSON nesting unbounded",
        "domain/inputs.py",
        "if len(path) > max_depth:",
        "if False:",
        (f"{STRICT}test_bad_architecture_kwargs_are_422[sqlite-nested 40 deep]",),
    ),
    Mutation(
        "strict input: callback URLs may hold whitespace",
        "domain/inputs.py",
        "check_url = _checker(_URL_BAD)",
        "check_url = _checker(_PROSE_BAD)",
        (f"{STRICT}test_callback_url_with_whitespace_or_controls_is_422[sqlite-crlf-header]",),
    ),
    Mutation(
        "strict input: form integers taken from '10.0'",
        "domain/inputs.py",
        "DigitsInt = Annotated[int, BeforeValidator(_digits_only)]",
        "DigitsInt = int",
        (f"{STRICT}test_integer_form_fields_take_digits_only[sqlite-model-10.0]",),
    ),
    Mutation(
        "strict input: page tokens parsed leniently",
        "domain/pagination.py",
        "data = parse_json(base64",
        "data = json.loads(base64",
        (f"{STRICT}test_forged_page_tokens_are_422[sqlite-/v1/datasets-surrogate id]",),
    ),
    Mutation(
        "strict input: float pixels not checked",
        "api/ingest.py",
        "and (problem := _float_pixel_problem(file, math.prod(inputs.shape[1:])))",
        "and False",
        (f"{STRICT}test_float_pixels_must_be_finite_and_in_0_1[sqlite-nan]",),
    ),
    Mutation(
        "strict input: preprocessing std down to 5e-324",
        "domain/preprocessing.py",
        "(1e-6, 1000.0)",
        "(0.0, 1000.0)",
        (f"{STRICT}test_unbounded_preprocessing_is_422[sqlite-std 1e-9]",),
    ),
    Mutation(
        "strict input: stored surrogates served raw (a legacy row breaks the lists)",
        "api/deps.py",
        'servable(field.serialize(value, mode="json")), ensure_ascii',
        'field.serialize(value, mode="json"), ensure_ascii',
        (f"{STRICT}test_a_legacy_row_with_a_surrogate_does_not_break_the_lists[sqlite]",),
    ),
    Mutation(
        "response rendered by FastAPI again (a second thread hop per request)",
        "api/deps.py",
        "return route.render(result, arguments)",
        "return result",
        ("tests/api/test_queries.py::test_a_read_takes_no_thread_pool_hop_to_render[sqlite]",),
    ),
    Mutation(
        "unfiltered list sorts the whole table (no index on created_at, id)",
        "migrations/versions/0010_requests_created_index.py",
        '["created_at", "id"], unique=False)',
        '["created_at"], unique=False)',
        ("tests/api/test_queries.py::test_the_unfiltered_list_reads_an_index_not_a_sort_of_the_table[sqlite]",),
    ),
    Mutation(
        "safetensors header: tensor count unbounded",
        "storage/safetensors_io.py",
        "if count > MAX_TENSORS + 2:",
        "if False:",
        ("tests/storage/test_safetensors_io.py::test_a_header_of_too_many_tensors_is_refused_quickly",),
        also=(('if len(header.keys() - {"__metadata__"}) > MAX_TENSORS:', "if False:"),),
    ),
    Mutation(
        "safetensors header: Python's digit limit error escapes",
        "storage/safetensors_io.py",
        "    except ValueError as exc:  # not InvalidSafetensors",
        "    except KeyError as exc:  # not InvalidSafetensors",
        (f"{STRICT}test_crafted_safetensors_headers_are_422_quickly[sqlite-weights-offset of 5,000 digits]",),
    ),
    # Erasure beyond the weights and coalescing (issue 15).
    Mutation(
        "superseded weights still served after the retention policy deleted them",
        "api/routes/models.py",
        "if row.weights_deleted_at is not None:",
        "if False:",
        (ERASURE_15,),
    ),
    Mutation(
        "erased rows' old shard objects left in the store",
        "worker/erasure.py",
        "for key in (key for key in dict.fromkeys(named) if key not in live):",
        "for key in ():",
        (ERASURE_15,),
    ),
    Mutation(
        "shard rows of staying samples not moved up after a rewrite",
        "worker/training_rows.py",
        "sample.row -= bisect.bisect_left(drop, sample.row)",
        "pass",
        (ERASURE_15,),
    ),
    Mutation(
        "a coalesced job trains on the leader's rows only",
        "worker/inputs.py",
        "forget_positions = job_positions(session, request)",
        "forget_positions = request.forget_positions",
        ("tests/worker/test_coalesce.py",),
    ),
    # Limits before authentication (issue 29: 5, 6, 7, 12).
    Mutation(
        "limits: the body is read before the caller is authorized",
        "api/admission.py",
        "if not authorized and PRINCIPAL not in scope:",
        "if False:",
        ("tests/api/test_limits.py::test_an_unauthorized_body_is_refused_before_it_is_read",),
    ),
    Mutation(
        "limits: a declared Content-Length over the limit is read",
        "api/admission.py",
        "if int(declared) > self.limit:",
        "if False:",
        ("tests/api/test_limits.py::test_a_declared_length_over_the_limit_is_refused_unread",),
    ),
    Mutation(
        "limits: a chunked body is not cut off",
        "api/admission.py",
        "if received > self.limit:",
        "if False:",
        ("tests/api/test_limits.py::test_a_chunked_body_is_cut_off_at_the_limit",),
    ),
    Mutation(
        "limits: metric labels take any method a client invents",
        "api/metrics.py",
        'method = scope["method"] if scope["method"] in METHODS else "other"',
        'method = scope["method"]',
        ("tests/api/test_limits.py::test_metrics_labels_stay_bounded",),
    ),
    Mutation(
        "limits: every scrape recomputes the service gauges",
        "api/metrics.py",
        "if time.monotonic() - self.computed_at >= self.ttl and self.lock.acquire(blocking=False):",
        "if self.lock.acquire():",
        ("tests/api/test_limits.py::test_a_scrape_flood_costs_one_computation_and_slows_no_one",),
    ),
    Mutation(
        "limits: /metrics exempt from the rate limit",
        "api/ratelimit.py",
        'EXEMPT_PATHS = ("/healthz", "/readyz")',
        'EXEMPT_PATHS = ("/healthz", "/readyz", "/metrics")',
        ("tests/api/test_limits.py::test_metrics_is_rate_limited_and_can_want_a_token",),
    ),
    Mutation(
        "limits: X-Forwarded-For trusted from anyone",
        "cli/main.py",
        "forwarded_allow_ips=proxies or None",
        'forwarded_allow_ips="*"',
        ("tests/api/test_limits.py::test_forwarded_for_is_honoured_only_from_a_trusted_proxy",),
        also=(("proxy_headers=bool(proxies)", "proxy_headers=True"),),
    ),
    Mutation(
        "limits: a database out of disk says 'busy' (503)",
        "api/errors.py",
        "        if _disk_full(error):\n",
        "        if False:\n",
        ("tests/api/test_disk.py::test_a_database_out_of_disk_is_507",),
    ),
    Mutation(
        "limits: a failed readiness check is reused",
        "api/app.py",
        "reusable=lambda down: not down",
        "reusable=lambda down: True",
        ("tests/api/test_outages.py::test_postgres_stopped_gives_503_and_recovers_without_a_restart",),
    ),
    # A model's input transform and augmentation (docs/inputs.md).
    Mutation(
        "inputs: evaluation batches augmented",
        "unlearning/data.py",
        "        return self._normalise(scale_inputs(inputs))\n",
        "        return self.augmented(inputs, torch.Generator().manual_seed(0))\n",
        (f"{TRANSFORMS}::test_evaluation_batchnorm_saliency_and_mask_never_see_the_augmentation",),
    ),
    Mutation(
        "inputs: training batches never augmented",
        "unlearning/training.py",
        "model_input = self.adapter(inputs) if augment is None else self.adapter.augmented(inputs, augment)",
        "model_input = self.adapter(inputs)",
        (f"{TRANSFORMS}::test_training_batches_are_augmented_over_the_same_rows_and_replay_the_same",),
    ),
    Mutation(
        "inputs: augmentation unseeded",
        "unlearning/transforms.py",
        "(torch.rand(len(x), generator=generator) < 0.5)",
        "(torch.rand(len(x)) < 0.5)",
        (f"{TRANSFORMS}::test_augmentation_is_seeded_and_is_a_zero_padded_shift_and_a_coin_flip_per_row",),
    ),
    Mutation(
        "inputs: resize without antialiasing (not torchvision's Resize)",
        "unlearning/transforms.py",
        "InterpolationMode.BILINEAR, antialias=True)",
        "InterpolationMode.BILINEAR, antialias=False)",
        (f"{TRANSFORMS}::test_the_transform_is_torchvisions_on_the_decoded_image_and_its_size_is_predicted",),
    ),
    Mutation(
        "inputs: a crop larger than the resized image accepted (padded)",
        "unlearning/transforms.py",
        "if resized is not None and (crop[0] > resized[0] or crop[1] > resized[1]):",
        "if False:",
        (
            f"{TRANSFORMS}::test_sizes_that_cannot_be_fixed_or_would_pad_are_refused",
            f"{MODEL_INPUTS}::test_a_bad_declaration_is_422_naming_the_field_and_nothing_is_stored"
            "[sqlite-input_transform-crop larger than the image]",
        ),
    ),
    Mutation(
        "inputs: encoded images registered without a size",
        "domain/preprocessing.py",
        "        model_input_shape(stored_shape, transform)\n",
        "        pass\n",
        (f"{MODEL_INPUTS}::test_encoded_images_need_a_transform_that_fixes_their_size[sqlite-missing]",),
    ),
    Mutation(
        "inputs: the model's declaration not stored",
        "api/routes/models.py",
        "                input_transform=transform,\n                augmentation=steps,\n"
        "                require_approval=require_approval,\n            ),\n            ModelVersion(",
        "                require_approval=require_approval,\n            ),\n            ModelVersion(",
        (
            f"{MODEL_INPUTS}::test_the_declaration_is_stored_on_the_model_and_its_first_version"
            "[sqlite-resize-crop-flip]",
        ),
    ),
    Mutation(
        "inputs: a published version does not copy them",
        "worker/publish.py",
        "                    input_transform=model.input_transform,\n"
        "                    augmentation=model.augmentation,\n",
        "",
        (f"{WORKER_INPUTS}::test_a_job_trains_with_the_augmentation_and_every_version_and_the_report_carry_both",),
    ),
    Mutation(
        "inputs: the report leaves out the versions' declaration",
        "domain/evidence.py",
        '        "input_transform": row.input_transform,\n        "augmentation": row.augmentation or [],\n',
        "",
        (f"{WORKER_INPUTS}::test_a_job_trains_with_the_augmentation_and_every_version_and_the_report_carry_both",),
    ),
    Mutation(
        "inputs: jobs train without the augmentation",
        "worker/inputs.py",
        "augmentation = Augmentation.from_list(model.augmentation)",
        "augmentation = None",
        (f"{WORKER_INPUTS}::test_a_job_trains_with_the_augmentation_and_every_version_and_the_report_carry_both",),
    ),
    Mutation(
        "inputs: validation builds for the stored shape",
        "worker/model_check.py",
        "return model_input_shape(dataset_row.input_shape, transform)",
        "return tuple(dataset_row.input_shape)",
        (f"{WORKER_INPUTS}::test_validation_builds_for_the_transformed_shape_and_measures_what_the_user_measures",),
    ),
    Mutation(
        "inputs: validation measures the untransformed images",
        "worker/validation.py",
        "load_dataset(services, session, dataset_row, model.preprocessing, model.input_transform)",
        "load_dataset(services, session, dataset_row, model.preprocessing)",
        (f"{WORKER_INPUTS}::test_validation_builds_for_the_transformed_shape_and_measures_what_the_user_measures",),
    ),
    # Worker validation's budget and the crash-leftover sweeper (issue 29, items 4 and 11).
    Mutation(
        "validation: the constructor's time budget ignored",
        "worker/sandbox.py",
        "child.communicate(request.encode(), timeout=timeout_seconds)",
        "child.communicate(request.encode())",
        (
            "tests/worker/test_validation.py::test_a_hostile_constructor_ends_invalid_with_a_reason_within_the_budget"
            "[huge depth]",
            "tests/worker/test_validation.py::test_a_constructor_over_the_time_budget_ends_invalid",
        ),
        also=(('"cpu_seconds": math.ceil(timeout_seconds)', '"cpu_seconds": 10**6'),),
    ),
    Mutation(
        "validation: the constructor's memory budget ignored",
        "worker/sandbox.py",
        "    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n",
        "",
        ("tests/worker/test_validation.py::test_a_constructor_over_the_memory_budget_ends_invalid",),
    ),
    Mutation(
        "validation: only MemoryError counts as the memory budget",
        "worker/sandbox.py",
        "isinstance(e, MemoryError) or ALLOCATION_FAILED.search(str(e))",
        "isinstance(e, MemoryError)",
        (f"{FAILED_ALLOCATION}[one huge tensor-True]",),  # fails at once: the address space never fills
    ),
    Mutation(
        "validation: a constructor that filled its budget and failed otherwise is its own fault",
        "worker/sandbox.py",
        "return peak > peak_before and",
        "return False and",
        (f"{FAILED_ALLOCATION}[filled, then a plain error-True]",),
    ),
    Mutation(
        "validation: the failed constructor's frames kept while judging",
        "worker/sandbox.py",
        "        traceback.clear_frames(error.__traceback__)\n",
        "",
        (f"{FAILED_ALLOCATION}[C++ bad_alloc-True]",),
    ),
    Mutation(
        "validation: NaN/Inf weights pass",
        "worker/model_check.py",
        "    if broken:  # it would only",
        "    if False:  # it would only",
        ("tests/worker/test_validation.py::test_weights_with_non_finite_values_are_invalid_naming_the_tensors",),
    ),
    Mutation(
        "validation: attempts unbounded",
        "worker/validation.py",
        "if attempt > services.settings.validation_max_attempts:",
        "if False:",
        ("tests/worker/test_validation.py::test_a_validation_whose_worker_dies_every_time_ends_invalid",),
    ),
    Mutation(
        "validation: file-path kwargs reach the constructor",
        "domain/architectures.py",
        "if key in REFUSED_KEYS or (key not in SAFE_KEYS and REFUSED_WORDS.search(key.lower())):",
        "if key in REFUSED_KEYS:",
        (
            "tests/worker/test_validation.py::test_kwargs_that_read_files_download_or_overflow_are_refused_at_"
            "registration",
        ),
    ),
    Mutation(
        "validation: re-sent every round",
        "worker/reconciler.py",
        "if (age := (now - created_at).total_seconds()) // period > (age - interval) // period\n",
        "if (now - created_at).total_seconds() > 0\n",
        (
            "tests/worker/test_reconciler.py::test_a_model_waiting_for_validation_is_resent_once_a_period_not_every_"
            "round",
        ),
    ),
    # The fast validation path (issue 26, item 2): a model that cannot run is invalid within seconds while every
    # worker runs a job.
    Mutation(
        "validation: the check waits in the gpu queue behind jobs",
        "domain/tasks.py",
        "    VALIDATE_MODEL: CONTROL_QUEUE,\n",
        "    VALIDATE_MODEL: GPU_QUEUE,\n",
        (FAST_VALIDATION,),
    ),
    Mutation(
        "validation: one worker process consumes both queues (the check behind the job)",
        "cli/main.py",
        "if control_process and set(ALL_QUEUES) <= set(consumed):",
        "if False:",
        (FAST_VALIDATION,),
    ),
    Mutation(
        "validation: the check runs no batch through the model",
        "worker/model_check.py",
        "logits = network(adapter(torch.full((PROBE_BATCH, *shape), 0.5)))",
        "logits = torch.zeros(PROBE_BATCH, model.num_classes)",
        (
            "tests/worker/test_validation.py::test_an_architecture_that_cannot_take_the_input_shape_is_invalid_at_the_"
            "check",
        ),
    ),
    Mutation(
        "validation: a passed check keeps its attempt counted",
        "worker/validation.py",
        "    if values is None:  # the check passed: its attempt ended; the measurement counts its own\n"
        "        _uncount_attempt(services, model_id)\n",
        "    if values is None:\n",
        ("tests/worker/test_validation.py::test_the_check_ends_a_wrong_model_and_hands_a_good_one_to_the_measurement",),
    ),
    Mutation(
        "validation: a passed check sends no measurement",
        "worker/validation.py",
        "        services.dispatcher.send(MEASURE_MODEL, model_id)\n",
        "        pass\n",
        (FAST_VALIDATION,),
    ),
    Mutation(
        "sweeper: the grace period ignored",
        "worker/sweeper.py",
        "if obj.modified_at < cutoff\n",
        "if obj.modified_at < cutoff + 3600\n",
        ("tests/worker/test_sweeper.py::test_leftovers_go_young_and_referenced_objects_stay[local]",),
    ),
    Mutation(
        "api: an unreachable object store answers 500",
        "api/errors.py",
        'Problem(503, "the object store is unavailable: retry shortly", headers={"Retry-After": "5"})',
        'Problem(500, "internal error; it has been logged")',
        ("tests/api/test_outages.py::test_an_object_store_outage_answers_503_and_a_missing_object_is_named",),
    ),
    Mutation(
        "split rows: the driver's cursor loses a row a chunk",
        "models/bulk.py",
        "            yield rows\n",
        "            yield rows[1:]\n",
        ("tests/worker/test_split_rows.py",),
    ),
    Mutation(
        "reconciler: stop() leaves the rounds running",
        "worker/reconciler.py",
        "        while not stopping.is_set():\n",
        "        while True:\n",
        ("tests/worker/test_sweeper.py::test_the_reconciler_sweeps_periodically",),
    ),
    Mutation(
        "sweeper: referenced objects deleted",
        "worker/sweeper.py",
        "for key in (key for key in old if key not in referenced):",
        "for key in old:",
        ("tests/worker/test_sweeper.py::test_leftovers_go_young_and_referenced_objects_stay[s3]",),
        (("return names(session, key) or not", "return not"),),
    ),
    Mutation(
        "sweeper: a reused object keeps its old time",
        "storage/base.py",
        "            self._touch(key)\n",
        "            pass\n",
        ("tests/worker/test_sweeper.py::test_leftovers_go_young_and_referenced_objects_stay[s3]",),
    ),
    Mutation(
        "sweeper: an object an upload renewed since the listing is deleted all the same",
        "worker/sweeper.py",
        "        return store.modified_at(key) < cutoff",
        "        return True",
        ("tests/worker/test_sweeper.py::test_an_object_an_upload_reuses_while_the_sweeper_reads_the_rows_stays",),
    ),
    Mutation(
        "upload: an object swept between the check and the renewal fails the upload",
        "storage/base.py",
        "        except ObjectNotFound:\n            return False",
        "        except ObjectNotFound:\n            raise",
        ("tests/storage/test_stores.py::test_an_object_swept_while_the_same_content_is_uploaded_is_stored_again",),
    ),
    Mutation(
        "objects: a claim does not store again an object a delete removed since the upload found it",
        "models/objects.py",
        "    if store.exists(key):\n        return",
        "    if True:\n        return",
        (
            f"{SWEEPER}::test_an_upload_that_reuses_the_object_the_sweeper_is_deleting_stores_it_again[local]",
            "tests/api/test_model_delete.py::test_weights_registered_again_while_an_invalid_model_is_deleted_stay"
            "[postgres]",
        ),
    ),
    Mutation(
        "objects: Postgres's advisory lock per object not taken",
        "models/objects.py",
        'session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})',
        "pass",
        (
            f"{SWEEPER}::test_an_upload_that_reuses_the_object_the_sweeper_is_deleting_stores_it_again[postgres]",
            "tests/api/test_model_delete.py::test_weights_registered_again_while_an_invalid_model_is_deleted_stay"
            "[postgres]",
        ),
    ),
    # The worker's allocator (issue 22: a fresh grid helper's page faults).
    Mutation(
        "allocator: jemalloc purges freed pages by time, as by default",
        "worker/allocator.py",
        'JEMALLOC_CONF = "dirty_decay_ms:-1"',
        'JEMALLOC_CONF = "dirty_decay_ms:10000"',
        ("tests/worker/test_allocator.py::test_jemalloc_keeps_freed_pages_through_a_task_and_gives_them_back_after",),
    ),
    Mutation(
        "allocator: freed pages never handed back",
        "worker/allocator.py",
        'failed = mallctl(f"arena.{ALL_ARENAS}.purge".encode(), None, None, None, 0)',
        "failed = 0",
        ("tests/worker/test_allocator.py::test_jemalloc_keeps_freed_pages_through_a_task_and_gives_them_back_after",),
    ),
    Mutation(
        "allocator: mcu worker stays on the system allocator",
        "cli/main.py",
        "    if settings.worker_jemalloc:\n",
        "    if False:\n",
        ("tests/e2e/test_flow.py::test_killed_worker_is_resumed_from_its_last_epoch",),
    ),
    # The streamed data path (issue 21): rows, batches and the cache's budget.
    Mutation(
        "streamed path: a loader drops a partial last batch of forget rows",
        "unlearning/training.py",
        "chunks = list(torch.randperm(len(subset), generator=generator).split(batch_size))",
        "chunks = [c for c in torch.randperm(len(subset), generator=generator).split(batch_size)"
        " if len(c) == batch_size]",
        (ROWS,),
    ),
    Mutation(
        "streamed path: batches of a subset drop a partial last batch",
        "unlearning/data.py",
        "chunks = list(order.to(subset.labels.device).split(batch_size))",
        "chunks = [c for c in order.to(subset.labels.device).split(batch_size) if len(c) == batch_size]",
        (ROWS,),
    ),
    Mutation(
        "streamed path: a view of a view reads the wrong positions",
        "unlearning/rows.py",
        "return RowView(source.base, source.index[positions.cpu()])",
        "return RowView(source.base, positions.cpu())",
        (ROWS, STREAMED),
    ),
    Mutation(
        "streamed path: a shard row read one row off",
        "unlearning/rows.py",
        "chunk = os.pread(fd, size, offset + r * size)",
        "chunk = os.pread(fd, size, offset + r * size + 784)",
        (ROWS, STREAMED),
    ),
    Mutation(
        "cache: the byte budget ignored",
        "storage/cache.py",
        "if self.budget_bytes is None:",
        "if True:",
        ("tests/storage/test_cache.py",),
    ),
    Mutation(
        "cache: the most recently used file evicted first",
        "storage/cache.py",
        "for _, size, path in sorted(files):",
        "for _, size, path in sorted(files, reverse=True):",
        ("tests/storage/test_cache.py",),
    ),
    # Encoded datasets and the model's input transform in the row sources (docs/datasets.md).
    Mutation(
        "encoded ingest: offsets[0] not checked",
        "domain/images.py",
        "if first == 0 and offsets[0] != 0:",
        "if False:",
        (ENCODED_API + "first offset]",),
    ),
    Mutation(
        "encoded ingest: offsets beyond the images' bytes accepted",
        "domain/images.py",
        "if not 0 <= start <= end <= total:",
        "if not 0 <= start <= end:",
        (ENCODED_API + "beyond the end]",),
    ),
    Mutation(
        "encoded ingest: decompression bombs accepted",
        "domain/images.py",
        "if header.width * header.height > MAX_PIXELS:",
        "if False:",
        (ENCODED_API + "PNG bomb]",),
    ),
    Mutation(
        "encoded ingest: 16-bit PNG accepted",
        "domain/images.py",
        "if colour not in _PNG_DEPTHS or depth not in _PNG_DEPTHS[colour]:",
        "if colour not in _PNG_DEPTHS:",
        (ENCODED_API + "16-bit PNG]",),
    ),
    Mutation(
        "encoded ingest: shards of both formats accepted",
        "api/ingest.py",
        "if mixed := [s for s in shards if s.encoding != first.encoding]:",
        "if mixed := []:",
        ("tests/api/test_encoded_datasets.py::test_shards_of_both_formats_or_a_malformed_encoded_shard_are_refused",),
    ),
    Mutation(
        "encoded ingest: one colour image does not make the dataset RGB",
        "api/ingest.py",
        "return (1 if all(s.input_shape[0] == 1 for s in shards) else 3, None, None)",
        "return (shards[0].input_shape[0], None, None)",
        (
            "tests/api/test_encoded_datasets.py::test_encoded_shards_are_registered_with_their_channels_read_"
            "from_the_headers",
        ),
    ),
    Mutation(
        "client: --size ignored for a .npz",
        "mcu_client/dataset_files.py",
        'if size is not None and (not folder or (path / "manifest.csv").is_file()):',
        "if False:",
        (CLIENT_FILES + "test_a_size_decodes_into_pixel_shards_and_applies_to_image_folders_only",),
    ),
    Mutation(
        "client: PNG / JPEG files re-encoded instead of kept",
        "mcu_client/dataset_files.py",
        "if image.format in KEPT_FORMATS and image.mode not in WIDE_MODES:",
        "if False:",
        (CLIENT_FILES + "test_an_image_folder_becomes_bounded_encoded_shards_with_relative_path_ids",),
    ),
    Mutation(
        "client: 16-bit grey clipped, not scaled",
        "mcu_client/dataset_files.py",
        "    if image.mode in WIDE_MODES:\n",
        "    if False:\n",
        (CLIENT_FILES + "test_an_image_folder_becomes_bounded_encoded_shards_with_relative_path_ids",),
    ),
    Mutation(
        "encoded rows: a row's byte range one byte short",
        "unlearning/rows.py",
        "self.length[here] = offsets[index][within + 1] - self.start[here]",
        "self.length[here] = offsets[index][within + 1] - self.start[here] - 1",
        (ROWS_ENCODED,),
    ),
    Mutation(
        "encoded rows: grey datasets decoded as RGB",
        "unlearning/rows.py",
        'self.mode = "L" if channels == 1 else "RGB"',
        'self.mode = "RGB"',
        (ROWS_ENCODED,),
    ),
    Mutation(
        "transform skipped for tensor datasets",
        "worker/inputs.py",
        "sources = {split: Transformed(source, transform) if transform else source",
        "sources = {split: source if transform else source",
        (INPUTS_TENSOR,),
    ),
    Mutation(
        "in-memory fast path decided on the stored rows, not the transformed",
        "worker/inputs.py",
        "if sum(source_bytes(s) for s in sources.values())",
        'if sum(source_bytes(getattr(s, "base", s)) for s in sources.values())',
        (INPUTS_TENSOR,),
    ),
    Mutation(
        "dataset preset fitted on the stored rows, not the transformed",
        "worker/inputs.py",
        'normalization_of(preprocessing, inputs["train"])',
        'normalization_of(preprocessing, getattr(inputs["train"], "base", inputs["train"]))',
        (INPUTS_TENSOR,),
    ),
    Mutation(
        "encoded rows: batches drop a partial last batch of forget rows",
        "unlearning/data.py",
        "chunks = list(order.to(subset.labels.device).split(batch_size))",
        "chunks = [c for c in order.to(subset.labels.device).split(batch_size) if len(c) == batch_size]",
        (
            "tests/worker/test_encoded_inputs.py::test_an_uploaded_encoded_dataset_loads_as_the_users_pipeline_"
            "sees_it[0-1]",
        ),
    ),
    Mutation(
        "erasure: an encoded shard keeps the erased rows' bytes",
        "worker/shards.py",
        "starts, ends = offsets[:-1][kept], offsets[1:][kept]",
        "starts, ends = offsets[:-1], offsets[1:]",
        (ENCODED_ERASURE,),
    ),
    Mutation(
        "erasure: an encoded shard rewritten as a tensor shard",
        "worker/shards.py",
        "return _encoded_without(path, kept) if encoded else _tensors_without(path, kept)",
        "return _tensors_without(path, kept)",
        (ENCODED_ERASURE,),
    ),
    Mutation(
        "a set sent to a device is copied onto it whole",
        "unlearning/data.py",
        "        return Subset(self.inputs, self.labels, self.ids, torch.device(device))",
        "        return Subset(self.inputs.to(device), self.labels, self.ids, torch.device(device))",
        ("tests/unlearning/test_pipeline.py::test_a_set_sent_to_a_device_keeps_its_rows_where_they_are",),
    ),
    # Cost at scale (issue 21): bounded samples where a full pass would not change the outcome.
    Mutation(
        "rl / salun train every retain row each epoch, not a fresh share",
        "unlearning/base_methods.py",
        "        return stratified_batches(retain, relabelled,",
        "        return stratified_batches(data.retain, relabelled,",
        (
            "tests/unlearning/test_base_methods.py::test_relabelling_methods_train_each_epoch_on_a_fresh_share_of_"
            "retain_rows",
        ),
    ),
    Mutation(
        "the mask scores every retain row, not its bounded sample",
        "unlearning/pipeline.py",
        "mask = compute_mask(original, mask_retain,",
        "mask = compute_mask(original, data.retain,",
        ("tests/unlearning/test_base_methods.py::test_the_mask_scores_retain_rows_on_a_bounded_sample",),
    ),
    # A request's diagnostics in GET (issue 25, item 3).
    Mutation(
        "diagnostics: timings dropped from GET of a request",
        "domain/requests.py",
        '"timings": summary.get("timings"),',
        '"timings": None,',
        (DIAGNOSTICS,),
    ),
    Mutation(
        "diagnostics: the curve training's losses per epoch not passed on",
        "unlearning/pipeline.py",
        '            "epoch_losses": stats.epoch_losses,\n',
        "",
        (DIAGNOSTICS, "tests/unlearning/test_epoch_losses.py"),
    ),
    Mutation(
        "diagnostics: a resumed job forgets the losses of the epochs before its checkpoint",
        "unlearning/mcu.py",
        'list(meta.get("epoch_losses") or []),',
        "[],",
        ("tests/unlearning/test_epoch_losses.py",),
    ),
    Mutation(
        "diagnostics: last heartbeat null once the worker let the job go",
        "domain/requests.py",
        "return max((beat for beat in beats if beat is not None), default=None)",
        "return row.heartbeat_at",
        (DIAGNOSTICS,),
    ),
    # The worker's metrics and failure log (issue 25, items 2 and 4).
    Mutation(
        "worker metrics: a curve's phase durations never observed",
        "worker/metrics.py",
        "            PHASE_SECONDS.labels(phase=phase, **labels).observe(timings[phase])",
        "            PHASE_SECONDS.labels(phase=phase, **labels)",
        (
            "tests/worker/test_metrics.py::test_a_published_request_shows_its_phase_durations_and_nothing_stays_in_progress",
        ),
    ),
    Mutation(
        "worker metrics: a job that raises stays in progress",
        "worker/metrics.py",
        "        with IN_PROGRESS.labels(task).track_inprogress():\n            yield\n",
        "        IN_PROGRESS.labels(task).inc()\n        yield\n        IN_PROGRESS.labels(task).dec()\n",
        ("tests/worker/test_metrics.py::test_a_job_that_raises_out_of_its_task_leaves_nothing_in_progress",),
    ),
    Mutation(
        "worker metrics: failed jobs not counted",
        "worker/jobs.py",
        "        metrics.FAILURES.labels(task, problem).inc()",
        "        metrics.FAILURES.labels(task, problem)",
        ("tests/worker/test_metrics.py::test_failed_jobs_are_counted_by_problem_type_and_logged_once",),
    ),
    Mutation(
        "failure log: an unexpected job failure logged without its traceback",
        "worker/jobs.py",
        "exc_info=error if unexpected else None)",
        "exc_info=None)",
        ("tests/worker/test_metrics.py::test_failed_jobs_are_counted_by_problem_type_and_logged_once",),
    ),
    # Logs and traces (issue 25, items 1 and 4: telemetry/).
    Mutation(
        "telemetry: the request id not put into the task's message headers",
        "worker/dispatch.py",
        "headers=telemetry.task_headers(**subject),",
        "headers=None,",
        (f"{TELEMETRY}::test_a_task_runs_with_the_subject_its_message_carries",),
    ),
    Mutation(
        "telemetry: the worker's task does not bind the id its message carries",
        "worker/celery_app.py",
        "    telemetry.bind_from_headers(task.request)",
        "    telemetry.clear()",
        (f"{TELEMETRY}::test_a_task_runs_with_the_subject_its_message_carries",),
    ),
    Mutation(
        "telemetry: a task keeps the fields of the task before it",
        "worker/celery_app.py",
        "def _after_task(**_: object) -> None:\n    telemetry.clear()",
        "def _after_task(**_: object) -> None:\n    pass",
        (f"{TELEMETRY}::test_a_task_runs_with_the_subject_its_message_carries",),
    ),
    Mutation(
        "telemetry: the log filter does not add the bound ids",
        "telemetry/logs.py",
        "        fields = dict(bound_fields())",
        "        fields: dict[str, str] = {}",
        (f"{TELEMETRY}::test_json_lines_carry_the_bound_request_id_and_the_current_trace",),
    ),
    Mutation(
        "telemetry: a job's heartbeat and cancel threads start without its request id",
        "telemetry/context.py",
        "    return partial(carried.run, quietly)",
        "    return quietly",
        (f"{TELEMETRY}::test_a_jobs_threads_carry_its_fields_and_make_no_spans",),
    ),
    Mutation(
        "telemetry: an HTTP request inherits the span its connection's previous request left",
        "telemetry/web.py",
        "    app.build_middleware_stack = lambda: FreshContext(traced_stack())\n",
        "",
        (f"{TELEMETRY}::test_an_http_request_starts_with_nothing_of_the_context_it_is_called_in",),
    ),
    Mutation(
        "telemetry: a secret's value written into the logs",
        "telemetry/logs.py",
        "            text = text.replace(secret, REDACTED)",
        "            pass",
        (f"{TELEMETRY}::test_known_secrets_and_credential_shapes_are_blanked_out",),
    ),
    Mutation(
        "telemetry: a job's phases make no spans",
        "worker/watch.py",
        "            self._spans.start(progress.phase)\n",
        "",
        ("tests/e2e/test_telemetry.py::test_one_request_is_one_trace_from_the_post_to_the_publication",),
    ),
    # One source of base methods and of states (issue 28).
    Mutation(
        "registry: the API validates base methods against a hand list",
        "domain/requests.py",
        "if not (method := base_method_spec(base_method)).offered:",
        'if (method := base_method_spec(base_method)).name not in ("ft", "ga", "neggrad_plus", "rl", "salun"):',
        (META + "test_a_base_method_declared_in_one_place_reaches_the_api_the_cli_and_the_bench[sqlite]",),
    ),
    Mutation(
        "registry: the benchmark's default methods are a hand list",
        "bench/quality.py",
        'default=",".join(method.name for method in offered_base_methods()),',
        'default="ft,ga,neggrad_plus,rl,salun",',
        (META + "test_a_base_method_declared_in_one_place_reaches_the_api_the_cli_and_the_bench[sqlite]",),
    ),
    Mutation(
        "states: cancel's states listed by hand",
        "domain/requests.py",
        "free = tuple(state for state in sources_of(State.CANCELLED) if state not in WORKER_HELD)",
        "free = (State.QUEUED, State.AWAITING_SELECTION)",
        (META + "test_a_state_added_to_the_transition_table_reaches_meta_the_client_the_cli_and_cancel[sqlite]",),
    ),
    Mutation(
        "states: the client waits with its own list of final states",
        "mcu_client/client.py",
        "terminal = terminal or frozenset(self.meta().terminal_states)",
        "terminal = frozenset(TERMINAL_STATES)",
        (META + "test_the_client_stops_at_the_final_states_the_server_serves[sqlite]",),
        also=(("    Curve,\n", "    TERMINAL_STATES,\n    Curve,\n"),),
    ),
    Mutation(
        "states: the console's state filter from its own list",
        "api/console/console.js",
        "meta.states.map((s) =>",
        '["queued", "running", "awaiting_selection", "materializing", "succeeded", "failed", "cancelling", '
        '"cancelled"].map((s) =>',
        (META + "test_the_console_lists_the_served_states[sqlite]",),
    ),
    Mutation(
        "a re-sent callback task restarts the attempt count (Celery's retries, not the outbox's)",
        "worker/callbacks.py",
        "        attempt = owed.attempts\n",
        "        attempt = 1 if owed.attempts == 3 else owed.attempts\n",
        ("tests/worker/test_callbacks.py::test_a_resent_callback_continues_the_outbox_count_and_budget",),
    ),
    Mutation(
        "the client lets httpx's transport errors through (the CLI prints a traceback for a wrong address)",
        "mcu_client/client.py",
        "        except httpx.TransportError as error:\n            raise Unreachable(",
        "        except httpx.HTTPStatusError as error:\n            raise Unreachable(",
        ("tests/cli/test_commands.py::test_an_unreachable_service_is_one_line_with_what_to_do",),
    ),
    Mutation(
        "CLI tables are cut to the terminal's width (ids end in '…')",
        "cli/client_commands.py",
        "    width, console.width = console.width, max(console.width, natural)\n",
        "    width = console.width\n",
        ("tests/api/test_cli_tables.py",),
    ),
    Mutation(
        "progress: each phase's overall share restarts at 0 (no bar across phases)",
        "unlearning/work_plan.py",
        "        before = sum(self.costs[p] for p in PHASES[: PHASES.index(progress.phase)])",
        "        before = 0.0",
        ("tests/unlearning/test_pipeline.py::test_one_progress_fraction_spans_the_whole_job",),
    ),
    Mutation(
        "a benchmark reaches into the worker from inside a function (not through its process or the API)",
        "bench/concurrency.py",
        "    from settings import Settings\n",
        "    from settings import Settings\n    from worker.services import connect  # noqa: F401\n",
        ("tests/test_structure.py::test_the_benchmarks_use_only_the_public_surface",),
    ),
    # Issue 26, item 8: deleting a model that failed validation; the client's report verifier; CLI verbs.
    Mutation(
        "deleting an invalid model leaves its weights in the store",
        "api/routes/models.py",
        "    for key in keys:  # each read",
        "    for key in []:  # each read",
        ("tests/api/test_model_delete.py::test_an_invalid_model_is_deleted_with_its_weights[sqlite]",),
    ),
    Mutation(
        "a ready model can be deleted",
        "domain/catalog.py",
        "    if model.state != ModelState.INVALID:\n",
        "    if model.state == ModelState.VALIDATING:\n",
        ("tests/api/test_model_delete.py::test_a_ready_model_is_never_deleted[sqlite]",),
    ),
    Mutation(
        "deleting an invalid model deletes weights another model shares",
        "domain/catalog.py",
        "    return [key for key in dict.fromkeys(keys) if key not in live]",
        "    return list(dict.fromkeys(keys))",
        ("tests/api/test_model_delete.py::test_weights_another_model_shares_stay[sqlite]",),
    ),
    Mutation(
        "the client's verifier does not check the signature",
        "mcu_client/evidence.py",
        '.verify(base64.b64decode(signature["value"], validate=True), message)',
        "",
        ("tests/mcu_client/test_evidence.py",),
    ),
    Mutation(
        "an invalid report's verdict is truthy",
        "mcu_client/evidence.py",
        "        return self.ok\n",
        "        return True\n",
        ("tests/mcu_client/test_evidence.py::test_any_change_is_invalid_and_falsy",),
    ),
    Mutation(
        "requests select's retention warning leaves out a version whose weights go",
        "cli/client_commands.py",
        "for v in versions[keep:] if v.weights_deleted_at is None",
        "for v in versions[keep + 1 :] if v.weights_deleted_at is None",
        ("tests/api/test_cli_verbs.py::test_select_warns_which_weights_the_retention_policy_deletes[sqlite]",),
    ),
    Mutation(
        "models upload does not print validation's verdict",
        "cli/client_commands.py",
        "                _print_validation(client, model.id)\n",
        "                pass\n",
        ("tests/api/test_cli_verbs.py::test_models_upload_prints_the_validation_verdict[sqlite-ready]",),
    ),
    Mutation(
        "console: a t between measured points is judged on its left neighbour, not the API's linear estimate",
        "api/console/console.js",
        "? (1 - w) * left[k] + w * right[k] : null;",
        "? left[k] : null;",
        ("tests/e2e/test_console.py",),
    ),
    # The approval gate (issue 27).
    Mutation(
        "approval: the submitter's own key may approve its request",
        "domain/approval.py",
        "    if actor == row.created_by:\n",
        "    if False:\n",
        (APPROVAL + "test_the_submitters_own_key_cannot_decide_even_with_the_scope[sqlite]",),
    ),
    Mutation(
        "approval: deny leaves the request queued (its job is sent)",
        "domain/approval.py",
        '"deny": ("denied", State.CANCELLED)',
        '"deny": ("denied", State.QUEUED)',
        (APPROVAL + "test_deny_cancels_with_the_reason_and_leaves_nothing_behind[sqlite]",),
    ),
    Mutation(
        "approval: a request on a gated model is queued at once",
        "domain/requests.py",
        'row["state"] = State.AWAITING_APPROVAL if gated[row["model_id"]] else State.QUEUED',
        'row["state"] = State.QUEUED',
        (APPROVAL + "test_a_request_on_a_gated_model_waits_and_nothing_is_sent[sqlite]",),
    ),
    Mutation(
        "approval: coalescing pulls a request awaiting approval into a queued job",
        "domain/requests.py",
        'if row["state"] == State.QUEUED else None',
        "if True else None",
        (APPROVAL + "test_coalescing_never_pulls_a_request_awaiting_approval_into_a_job[sqlite]",),
    ),
    Mutation(
        "approval: MCU_REQUIRE_APPROVAL ignored",
        "domain/approval.py",
        "    if session.info.get(EVERYWHERE):\n",
        "    if False:\n",
        (APPROVAL + "test_the_deployment_wide_setting_gates_every_model",),
    ),
    Mutation(
        "approval: the report leaves out the decision",
        "domain/evidence.py",
        '"approval": request.approval,',
        '"approval": None,',
        (APPROVAL + "test_another_key_approves_the_job_is_sent_and_the_report_carries_the_approval[sqlite]",),
    ),
    Mutation(
        "approval: the console offers Approve / Deny to a key without requests:approve",
        "api/console/console.js",
        'request.state === "awaiting_approval" && can("requests:approve")',
        'request.state === "awaiting_approval"',
        (APPROVAL + "test_the_console_offers_approve_and_deny_to_a_key_with_the_scope[sqlite]",),
    ),
    # Subject-wide erasure and bulk intake (issue 27).
    Mutation(
        "subject erasure: the aggregate state ignores a failed request",
        "domain/subject_erasure.py",
        "    if State.FAILED in found:\n        return ErasureState.FAILED\n",
        "",
        (SUBJECT_ERASURES + "test_the_aggregate_state_is_the_first_that_applies",),
    ),
    Mutation(
        "subject erasure: bulk idempotency key ignored (an external_id is never looked up)",
        "domain/subject_erasure.py",
        "if ext is not None and ext in stored:",
        "if False:",
        (SUBJECT_ERASURES + "test_bulk_intake_answers_per_item_and_a_retry_files_nothing_twice[sqlite]",),
    ),
    Mutation(
        "subject erasure: only the first dataset holding the subject is searched",
        "domain/subject_erasure.py",
        "for dataset_id, models in self.models.items():",
        "for dataset_id, models in list(self.models.items())[:1]:",
        (SUBJECT_ERASURES + "test_a_subject_two_models_hold_gets_one_request_per_model[sqlite]",),
    ),
    Mutation(
        "subject erasure: rows a model erased already are filed again",
        "domain/subject_erasure.py",
        "remaining = {p: s for p, s in positions.items() if p not in erased}",
        "remaining = dict(positions)",
        (SUBJECT_ERASURES + "test_the_aggregate_state_follows_the_requests_and_one_signed_report_covers_them[sqlite]",),
    ),
    Mutation(
        "subject erasure: a model still validating is skipped, the erasure reports success without it",
        "domain/subject_erasure.py",
        "if model.state == ModelState.VALIDATING:",
        "if False:",
        (SUBJECT_ERASURES + "test_a_model_still_validating_refuses_the_erasure[sqlite]",),
    ),
    Mutation(
        "bulk intake: first audit events sealed over the wrong chain length",
        "models/audit.py",
        'seal(key, row["id"], 1, new_hash)',
        'seal(key, row["id"], 2, new_hash)',
        (SUBJECT_ERASURES + "test_a_large_bulk_files_what_a_single_one_does_with_sound_audit_chains[sqlite]",),
    ),
    Mutation(
        "bulk intake: no run task sent at commit (every request waits for the reconciler's round)",
        "domain/lifecycle.py",
        'send = row.get("job_id") is None and row["model_id"] not in started',
        "send = False",
        (SUBJECT_ERASURES + "test_a_bulk_sends_one_run_task_per_model_and_leaves_the_rest_to_the_reconciler[sqlite]",),
    ),
    Mutation(
        "bulk intake: COPY leaves out the columns' Python defaults",
        "models/bulk.py",
        "elif isinstance(default, ColumnDefault) and not default.is_sequence:",
        "elif False:",
        (SUBJECT_ERASURES + "test_a_large_bulk_files_what_a_single_one_does_with_sound_audit_chains[postgres]",),
    ),
    Mutation(
        "console: a class-wise request's test accuracy unlabelled, no forgotten-class column",
        "api/console/console.js",
        "const metricsOf = (curve) => metricColumns(classwise(curve));",
        "const metricsOf = (curve) => metricColumns(false);",
        ("tests/e2e/test_console.py",),
    ),
    Mutation(
        "console: the curve's y-axis fixed at 0-1",
        "api/console/console.js",
        'autorange: true, rangemode: "normal" },',
        "range: [-0.03, 1.03] },",
        ("tests/e2e/test_console.py",),
    ),
    Mutation(
        "power: a criterion the original model passes is called decidable",
        "domain/erasure.py",
        '            "decidable": value is not None and sign * (value - target) > margin + 1e-9,',
        '            "decidable": value is not None,',
        (
            "tests/domain/test_erasure_power.py",
            "tests/worker/test_evidence.py::test_a_forget_set_too_small_to_decide_is_named_in_the_audit_trail",
        ),
    ),
    Mutation(
        "relearning trains on the forget rows it measures",
        "unlearning/attacks.py",
        "        result[name] = {\n            label: relearn_curve(model, retain, shots, measure_on,",
        "        result[name] = {\n            label: relearn_curve(model, measure_on, shots, measure_on,",
        ("tests/unlearning/test_attacks.py",),
    ),
    Mutation(
        "the feature probe is fit on forget rows",
        "unlearning/attacks.py",
        "    fit, held_out = test.take(halves[: len(test) // 2]), test.take(halves[len(test) // 2 :])",
        "    fit, held_out = data.forget, test.take(halves[len(test) // 2 :])",
        ("tests/unlearning/test_attacks.py",),
    ),
    Mutation(
        "a required relearning check is never judged",
        "domain/erasure.py",
        "    if relearning and label in relearning[run]:",
        "    if False:",
        (
            "tests/unlearning/test_attacks.py",
            EVIDENCE + "::test_a_required_relearning_check_withholds_a_point_that_relearns",
        ),
    ),
    Mutation(
        "the undecidable policy withhold is ignored",
        "domain/erasure.py",
        'setting(criterion, "undecidable") == "withhold"',
        'setting(criterion, "undecidable") == "never"',
        (EVIDENCE + "::test_under_the_withhold_policy_an_undecidable_criterion_is_not_met",),
    ),
    Mutation(
        "the attacks on a point run at another t",
        "worker/point_attacks.py",
        "measure_at(services, request, t, _hooks(services, request_id, t))",
        "measure_at(services, request, 1.0, _hooks(services, request_id, t))",
        (
            "tests/worker/test_point_attacks.py::test_attacks_on_two_points_tell_them_apart_and_match_what_publication_measures",
        ),
    ),
    Mutation(
        "a helper measures its grid point at another t",
        "worker/grid.py",
        "    metrics = meter.point(unit.t)",
        "    metrics = meter.point(min(1.0, unit.t + 0.025))",
        ("tests/e2e/test_grid_fanout.py",),
    ),
    # SCRUB and l1-sparse (issue 23).
    Mutation(
        "scrub: the max steps skipped (no pass over the forget set)",
        "unlearning/base_methods.py",
        "        forget = data.forget if epoch < max_epochs else None",
        "        forget = None if epoch < max_epochs else None",
        (BASE_METHODS_TESTS + "::test_scrub_forgets_through_its_max_steps",),
    ),
    Mutation(
        "scrub: the max steps pull towards the teacher instead of away",
        "unlearning/base_methods.py",
        "            return -kl.clamp(max=cap)",
        "            return kl.clamp(max=cap)",
        (BASE_METHODS_TESTS + "::test_scrub_forgets_through_its_max_steps",),
    ),
    Mutation(
        "scrub: the max steps' KL not capped",
        "unlearning/base_methods.py",
        "            return -kl.clamp(max=cap)",
        "            return -kl",
        (BASE_METHODS_TESTS + "::test_scrub_max_steps_are_capped_so_the_weights_stay_bounded",),
    ),
    Mutation(
        "base phase: a non-finite BatchNorm statistic let through",
        "unlearning/base_methods.py",
        "    if broken:\n        raise DivergenceError(",
        "    if broken and False:\n        raise DivergenceError(",
        (BASE_METHODS_TESTS + "::test_a_base_model_with_a_non_finite_statistic_is_a_divergence",),
    ),
    Mutation(
        "the random-forgetting MIA target not the points' attack's call on the test rows",
        "unlearning/pipeline.py",
        "unseen.mia_efficacy if stable else None",
        "unseen.mia_efficacy / 2 if stable else None",
        (
            "tests/unlearning/test_pipeline.py::"
            "test_random_forgetting_targets_are_the_original_on_test_rows_measured_as_a_point",
        ),
    ),
    Mutation(
        "a coin-flip attack's MIA target kept",
        "unlearning/pipeline.py",
        "unseen.mia_efficacy if stable else None",
        "unseen.mia_efficacy",
        ("tests/unlearning/test_pipeline.py::test_no_mia_target_where_the_originals_attack_is_a_coin_flip",),
    ),
    Mutation(
        "the attack's spread from one resample (every SVC trained on the same rows)",
        "unlearning/metrics.py",
        "member_confidence[rng.integers(0, m, m)], nonmember_confidence[rng.integers(0, n, n)]",
        "member_confidence, nonmember_confidence",
        ("tests/unlearning/test_pipeline.py::test_no_mia_target_where_the_originals_attack_is_a_coin_flip",),
    ),
    Mutation(
        "the console silent about a curve without an MIA target",
        "api/console/console.js",
        'typeof curve.targets.mia_efficacy === "number" ? null :',
        "true ? null :",
        ("tests/e2e/test_console.py::test_a_coin_flip_attack_leaves_mia_unjudged_on_the_curve_and_in_the_report",),
    ),
    Mutation(
        "a job without an MIA target judged without saying so",
        "domain/erasure.py",
        '    if targets.get("mia_efficacy") is None:\n        statement +=',
        "    if False:\n        statement +=",
        ("tests/domain/test_erasure_power.py::test_a_job_without_an_mia_target_says_its_mia_is_not_judged",),
    ),
    Mutation(
        "l1_sparse: the l1 penalty never applied",
        "unlearning/base_methods.py",
        "        weight[0] = l1 * (1 - epoch / epochs)  # the epoch's γ, read by loss_fn",
        "        weight[0] = 0 * (1 - epoch / epochs)  # the epoch's γ, read by loss_fn",
        (BASE_METHODS_TESTS + "::test_l1_sparse_is_fine_tuning_plus_a_decaying_l1_penalty",),
    ),
    Mutation(
        "fan-out: the recommended point's last part left out of the sum",
        "worker/grid.py",
        "        return sum(counts[1:], counts[0])",
        "        return sum(counts[1:-1], counts[0])",
        ("tests/e2e/test_grid_fanout.py",),
    ),
    Mutation(
        "fan-out: a part of a full-set measurement overlaps the next",
        "unlearning/metrics.py",
        "for k in (part, part + 1))",
        "for k in (part, part + 2))",
        ("tests/unlearning/test_metrics.py::test_the_parts_of_a_full_set_measurement_add_up_to_the_whole_exactly",),
    ),
    Mutation(
        "fan-out: a part cut inside a batch (other batches than the whole's)",
        "unlearning/metrics.py",
        "min(len(subset), batch_size * (batches * k // parts))",
        "min(len(subset), len(subset) * k // parts)",
        ("tests/unlearning/test_metrics.py::test_the_parts_of_a_full_set_measurement_add_up_to_the_whole_exactly",),
    ),
    # One job on several processes (issue 22): unlearning/distributed.py, worker/data_parallel.py.
    Mutation(
        "data parallel: BatchNorm statistics not all-reduced",
        "unlearning/base_methods.py",
        "    with batchnorm_synced(working):",
        "    with batchnorm_synced(nn.Module()):",
        (DISTRIBUTED + "::test_base_method_on_two_ranks_equals_one_process",),
    ),
    Mutation(
        "data parallel: synced BatchNorm's backward keeps each rank's own gradient of the statistics",
        "unlearning/distributed.py",
        "        return _summed(grad.contiguous().clone())",
        "        return grad",
        (DISTRIBUTED + "::test_base_method_on_two_ranks_equals_one_process",),
    ),
    Mutation(
        "data parallel: each rank steps on its own gradients",
        "unlearning/training.py",
        "            if ranks is not None and sum_gradients(params, skip=not finite):",
        "            if ranks is not None and not finite:",
        (DISTRIBUTED + "::test_base_method_on_two_ranks_equals_one_process",),
    ),
    Mutation(
        "data parallel: ranks sharing memory keep their own gradients instead of the sum",
        "unlearning/distributed.py",
        "        return buffer.sum(0)",
        "        return buffer[self.rank].clone()",
        (DISTRIBUTED + "::test_base_method_on_two_ranks_equals_one_process",),
    ),
    Mutation(
        "data parallel: a rank reads the shared sum before the others have written their part",
        "unlearning/distributed.py",
        "            while self.counters[other * self._LINE] < self.calls:",
        "            while self.counters[other * self._LINE] < self.calls - 1:",
        ("tests/unlearning/test_shared_sum.py",),
    ),
    Mutation(
        "data parallel: one shared buffer for every call (a fast rank overwrites what a slow one reads)",
        "unlearning/distributed.py",
        "        buffer = self.buffers[self.calls % 2]",
        "        buffer = self.buffers[0]",
        ("tests/unlearning/test_shared_sum.py",),
    ),
    Mutation(
        "data parallel: ranks that could not all map the shared file use it anyway",
        "unlearning/distributed.py",
        "        if memory is None or not mapped.item():",
        "        if memory is None:",
        ("tests/unlearning/test_shared_sum.py",),
    ),
    Mutation(
        "data parallel: a rank's loss not weighted by its share of the batch",
        "unlearning/training.py",
        "            (loss * batch.share).backward()",
        "            loss.backward()",
        (DISTRIBUTED + "::test_base_method_on_two_ranks_equals_one_process",),
    ),
    Mutation(
        "data parallel: a cancel waits for the ranks to finish",
        "worker/data_parallel.py",
        "    process.send_signal(signal.SIGTERM)\n",
        "    process.wait()\n",
        ("tests/e2e/test_data_parallel.py::test_a_cancel_stops_the_ranks",),
    ),
    Mutation(
        "Fides is resumed for a cancelled erasure",
        "worker/fides.py",
        "        if state == ErasureState.SUCCEEDED:",
        "        if state in (ErasureState.SUCCEEDED, ErasureState.CANCELLED):",
        ("tests/api/test_fides.py::test_a_cancelled_erasure_leaves_the_privacy_request_paused",),
    ),
    Mutation(
        "the Fides reply-to path is not checked",
        "domain/fides.py",
        "    if not reply_to or not REPLY_TO.fullmatch(reply_to) or not token:",
        "    if not reply_to or not token:",
        ("tests/api/test_fides.py::test_bad_webhook_calls_are_problems",),
    ),
]


@dataclass
class Outcome:
    mutation: Mutation
    result: str  # "caught", "SURVIVED" or "NOT APPLIED"
    detail: str  # the test that failed, or why
    seconds: float


def copy_tree(into: Path) -> Path:
    target = into / "src"
    shutil.copytree(ROOT, target, ignore=COPY_IGNORES)
    return target


def apply(tree: Path, mutation: Mutation) -> str | None:
    """Apply every replacement of `mutation` in the copy; the reason it cannot be applied, or None."""
    file = tree / mutation.path
    text = file.read_text()
    for old, new in ((mutation.old, mutation.new), *mutation.also):
        count = text.count(old)
        if count != 1:
            return f"{old.strip()!r} occurs {count} times in {mutation.path}"
        text = text.replace(old, new)
    file.write_text(text)
    return None


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    """pytest in the copy (stopping at the first failure); its exit status and output. PYTHONPATH makes the
    processes the tests start import the copy too, not the installed package."""
    env = os.environ | {"PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "240"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT_SECONDS} s"
    return done.returncode, done.stdout + done.stderr


def first_failure(output: str) -> str:
    """The first failed test and its message, as pytest's short summary gives them."""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].rsplit("::", 1)[-1][:160]
    return output.strip().splitlines()[-1] if output.strip() else ""


def check(mutation: Mutation) -> Outcome:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mcu-mutate-") as scratch:
        tree = copy_tree(Path(scratch))
        problem = apply(tree, mutation)
        if problem is not None:
            return Outcome(mutation, "NOT APPLIED", problem, time.perf_counter() - started)
        status, output = run_tests(tree, mutation.tests)
    seconds = time.perf_counter() - started
    if status == 0:
        return Outcome(mutation, "SURVIVED", "every selected test passed", seconds)
    if status in (1, 2, -1):  # failures, errors (e.g. an import broken by the mutation), or a hang
        return Outcome(mutation, "caught", first_failure(output), seconds)
    return Outcome(mutation, "NOT APPLIED", f"pytest exit {status}: {first_failure(output)}", seconds)


def baseline(mutations: list[Mutation]) -> bool:
    """Every selection passes on an unmodified copy."""
    tests = tuple(dict.fromkeys(t for m in mutations for t in m.tests))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mcu-mutate-") as scratch:
        status, output = run_tests(copy_tree(Path(scratch)), tests)
    print(
        f"baseline: {len(tests)} selections on the unmodified tree, "
        f"{'pass' if status == 0 else 'FAIL'} ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    if status != 0:
        print(output[-3000:])
    return status == 0


def short(tests: tuple[str, ...]) -> str:
    return ", ".join(t.removeprefix("tests/") for t in tests)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("words", nargs="*", help="run only mutations whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the unmodified tree")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.words or any(w.lower() in m.name.lower() for w in args.words)]
    if args.list:
        for m in chosen:
            print(f"{m.name}  [{m.path}]  ->  {short(m.tests)}")
        return 0
    if not chosen:
        print("no mutation matches", args.words)
        return 2
    started = time.perf_counter()
    if not args.no_baseline and not baseline(chosen):
        return 2
    outcomes = []
    for mutation in chosen:
        outcome = check(mutation)
        outcomes.append(outcome)
        print(f"{outcome.result:>11}  {outcome.seconds:5.0f} s  {mutation.name}  ({outcome.detail})", flush=True)

    width = max(len(m.name) for m in chosen)
    print(f"\n{'mutation':<{width}} | {'result':<11} | {'s':>4} | tests run")
    print(f"{'-' * width}-|-{'-' * 11}-|-{'-' * 4}-|-{'-' * 9}")
    for o in outcomes:
        print(f"{o.mutation.name:<{width}} | {o.result:<11} | {o.seconds:4.0f} | {short(o.mutation.tests)}")
    caught = sum(o.result == "caught" for o in outcomes)
    survived = sum(o.result == "SURVIVED" for o in outcomes)
    broken = len(outcomes) - caught - survived
    print(f"\ntotal {time.perf_counter() - started:.0f} s" + (f"; {broken} not applied" if broken else ""))
    print(f"mutations: {caught} caught, {survived} survived")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
