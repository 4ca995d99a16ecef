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
EVIDENCE = "tests/worker/test_evidence.py"
MCU = "tests/unlearning/test_mcu.py"
TRANSFORMS = "tests/unlearning/test_transforms.py"
MODEL_INPUTS = "tests/api/test_model_inputs.py"
WORKER_INPUTS = "tests/worker/test_model_inputs.py"
METRICS = "tests/unlearning/test_metrics.py"
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
        '"mia_efficacy": mia_efficacy(members, nonmembers, forget_conf)',
        '"mia_efficacy": mia_efficacy(members, nonmembers, retain_conf)',
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
        "resume ignores the checkpoint (restarts at epoch 0, still logs the resume)",
        "worker/jobs.py",
        "resume=resume,",
        "resume=None,",
        ("tests/worker/test_resume.py",),
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
        "            attack=(members, sampled.test),\n",
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
        "EvalSets.full(data, cfg.eval, cfg.seed), cfg)",
        "EvalSets.draw(data, cfg.eval, cfg.seed), cfg)",
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
        "worker/validation.py",
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
        "        _uncount_attempt(services, model_id)\n",
        "        pass\n",
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
        "domain/signing.py",
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
        'if inputs.dtype == "F32" and inputs.shape[0] and (',
        "if False and (",
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
        "return route.render(result, kwargs)",
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
        "            services.store.delete(key)\n",
        "",
        (ERASURE_15,),
    ),
    Mutation(
        "shard rows of staying samples not moved up after a rewrite",
        "worker/erasure.py",
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
        "                input_transform=transform,\n                augmentation=steps,\n            ),\n"
        "            ModelVersion(",
        "            ),\n            ModelVersion(",
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
        "worker/validation.py",
        "input_shape = model_input_shape(dataset_row.input_shape, transform)",
        "input_shape = tuple(dataset_row.input_shape)",
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
            "[kwargs0-took longer than 20 s]",
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
        "validation: NaN/Inf weights pass",
        "worker/validation.py",
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
    Mutation(
        "sweeper: the grace period ignored",
        "worker/sweeper.py",
        "if obj.modified_at < cutoff\n",
        "if obj.modified_at < cutoff + 3600\n",
        ("tests/worker/test_sweeper.py::test_leftovers_go_young_and_referenced_objects_stay[local]",),
    ),
    Mutation(
        "sweeper: referenced objects deleted",
        "worker/sweeper.py",
        "orphans = [key for key in old if key not in referenced]",
        "orphans = old",
        ("tests/worker/test_sweeper.py::test_leftovers_go_young_and_referenced_objects_stay[s3]",),
    ),
    Mutation(
        "sweeper: a reused object keeps its old time",
        "storage/base.py",
        "                self._touch(key)  # again",
        "                pass  # again",
        ("tests/worker/test_sweeper.py::test_leftovers_go_young_and_referenced_objects_stay[s3]",),
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
