#!/usr/bin/env python3
"""Breaks the code on purpose, one guarantee at a time, and checks that the
test named for that guarantee fails (issue 21: a test that would still pass
with the behaviour it names broken is a defect).

    .ci/mutations.py [NAME ...]      # all by default
    .ci/mutations.py --sample N      # N of them, chosen by MUTATIONS_SEED
                                     # (default: the checkout's HEAD commit),
                                     # as .ci/run does: a rotating handful

Works on a copy of the checkout, so the checkout itself is never modified;
in its own target directory, or in MUTATIONS_TARGET (e.g. the checkout's
`target`, whose dependencies it then reuses: the copy's own crate is built
apart, at its own path). Each mutation is one exact text replacement; a
replacement that no longer matches the code is reported as stale.
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile

# name: (file, old text, new text, nextest filter expression)
MUTATIONS = {
    "validator-not-woken-by-the-change-feed": (
        "src/lib.rs",
        "            validator.wake_validator();",
        "            let _ = validator;",
        "test(the_api_and_the_deliver_role_split_the_work)",
    ),
    "requests-answered-from-shared-pages": (
        "src/read/mod.rs",
        "self.fill(&q, start, q.shared).await?;",
        "self.fill(&q, start, true).await?;",
        "test(a_publish_is_in_the_next_read_through_another_instance_while_others_wait)",
    ),
    "change-feed-read-with-nobody-waiting": (
        "src/feeds/coordination/changes.rs",
        "let events_idle = !always && !store.is_watched();",
        "let events_idle = false;",
        "test(idle_long_polls_cost_per_instance_not_per_feed)",
    ),
    "pdp-key-not-reloaded": (
        "src/secrets_reload.rs",
        'if involved("pdp__subscription_key") && self.pdp_key.set(',
        'if false && self.pdp_key.set(',
        "test(key_rings_and_the_pdp_key_are_rotated_in_files_without_a_restart)",
    ),
    "instance-key-ignores-app": (
        "src/api/instance.rs",
        'resource: Some(format!("urn:altinn:resource:app_{org}_{app}")),',
        "resource: None,",
        "test(a_key_reads_its_instance_and_nothing_else)",
    ),
    "pdp-last-answer-wins": (
        "src/authz/request.rs",
        "by_id.entry(id).and_modify(|p| *p &= permit).or_insert(permit);",
        "by_id.insert(id, permit);",
        "test(a_repeated_event_id_is_permitted_only_when_every_answer_permits)",
    ),
    "token-memory-keyed-on-header-and-claims": (
        "src/auth/verified.rs",
        "fn key(token: &str) -> &str {\n        token\n    }",
        "fn key(token: &str) -> &str {\n        token.rsplit_once('.').map_or(token, |(a, _)| a)\n    }",
        "test(bad_tokens_are_401_problems_never_500)",
    ),
    "read-fails-open": (
        "src/read/mod.rs",
        "self.pdp.authorize(caller, q.action, &records).await.map_err(ReadError::Authorization)?",
        "self.pdp.authorize(caller, q.action, &records).await.unwrap_or_else(|_| vec![true; records.len()])",
        "test(every_pdp_failure_is_a_503)",
    ),
    "circuit-never-opens": (
        "src/authz/mod.rs",
        "if self.breaker.is_open() {",
        "if false && self.breaker.is_open() {",
        "test(every_pdp_failure_is_a_503)",
    ),
    "circuit-never-closes": (
        "src/authz/mod.rs",
        "open.is_some_and(|until| self.now_ms() < until)",
        "open.is_some()",
        "test(the_circuit_closes_again_when_the_pdp_recovers)",
    ),
    "key-refusal-logs-the-key": (
        "src/api/instance.rs",
        'tracing::info!(reason = %e, "instance access key refused");',
        'tracing::info!(reason = %e, key, "instance access key refused");',
        "test(no_identity_number_token_key_or_cookie_reaches_the_logs)",
    ),
    "repairer-forgets-its-position": (
        "src/feeds/events/repairer.rs",
        "reached = Some(round.continuation()?);",
        "let _ = round.continuation()?;",
        "test(the_repairer_completes_an_interrupted_publish)",
    ),
    "lease-never-expires": (
        "src/feeds/events/repairer.rs",
        "if doc.owner != self.owner && doc.expires_at > now =>",
        "if doc.owner != self.owner =>",
        "test(the_repairer_completes_an_interrupted_publish)",
    ),
    "repairer-retries-a-refused-event": (
        "src/feeds/events/repairer.rs",
        "Err(e) if e.is_client_error() => {",
        "Err(e) if false && e.is_client_error() => {",
        "test(the_repairer_passes_over_an_event_it_cannot_repair)",
    ),
    "service-starts-no-repairer": (
        "src/lib.rs",
        """tasks.spawn("repairer", |stop| repairer.run(every, stop));""",
        """std::mem::drop((repairer, every));""",
        "test(the_service_repairs_interrupted_publishes_by_itself)",
    ),
    "ended-task-leaves-pod-live": (
        "src/api/health.rs",
        "let ended = liveness.ended();",
        "let ended: Vec<&str> = Vec::new();",
        "test(a_background_task_that_panics_fails_liveness_and_is_counted)",
    ),
    "publish-deadline-per-feed": (
        "src/feeds/events/mod.rs",
        "self.writer.append(&subject, record, ids, writer::WhenFull::Wait, deadline).await?;",
        "self.writer.append(&subject, record, ids, writer::WhenFull::Wait, Some(self.seg.clock.now_ms() + self.cosmos.config.publish_deadline_ms)).await?;",
        "test(a_publish_has_one_deadline_for_both_its_feeds)",
    ),
    "no-lookup-after-rollover": (
        "src/feeds/events/writer.rs",
        "let maybe: Vec<u64> = item.maybe_in.iter().copied().filter(|k| *k != h.segment).collect();",
        "let maybe: Vec<u64> = Vec::new();",
        "test(a_failed_write_is_looked_up_after_the_rollover)",
    ),
    "conflict-skips-a-number": (
        "src/feeds/events/writer.rs",
        "Some(f) if f.count > h.count => Ok(Head { opened: f.opened.or(h.opened), ..f }),",
        "Some(f) if f.count > h.count => Ok(Head { opened: f.opened.or(h.opened), count: (f.count + 1).min(self.seg.size()), ..f }),",
        "test(a_reader_paging_while_several_writers_roll_segments_over)",
    ),
    "sealed-at-the-whole-ttl": (
        "src/feeds/events/mod.rs",
        "None => cosmos.ttl_seconds.map(|t| i64::from(t) / 2),",
        "None => cosmos.ttl_seconds.map(i64::from),",
        "test(segments_are_sealed_at_half_the_containers_ttl_by_default)",
    ),
    "readers-stop-at-expired-segments": (
        "src/feeds/events/segment.rs",
        "self.layout.close_after.is_some_and(|w| self.clock.now() - opened > w + w.min(3600))",
        "self.layout.close_after.is_some_and(|w| self.clock.now() - opened > w + w.min(3600)) && false",
        "test(reads_skip_what_has_expired)",
    ),
    "waits-before-the-head": (
        "src/read/mod.rs",
        "if !events.is_empty() || q.paging.wait.is_zero() || !at_end {",
        "if !events.is_empty() || q.paging.wait.is_zero() {",
        "test(a_page_that_runs_out_of_scan_budget_answers_at_once)",
    ),
    "appends-retry-forever": (
        "src/feeds/events/writer.rs",
        "if queue.iter().any(late) {",
        "if false {",
        "test(a_publish_cosmos_keeps_refusing_is_a_503_after_the_retry_deadline)",
    ),
    "no-body-limit": (
        "src/api/mod.rs",
        ".layer(DefaultBodyLimit::max(max_body))",
        ".layer(DefaultBodyLimit::disable())",
        "test(every_body_over_the_limit_is_a_413)",
    ),
    "writer-wakes-no-one": (
        "src/feeds/events/writer.rs",
        "        self.notifier.notify(feed);\n        Head { count: h.count + n as u64, taken: h.taken + n as u64, ..h }",
        "        Head { count: h.count + n as u64, taken: h.taken + n as u64, ..h }",
        "test(a_waiting_request_is_answered_as_soon_as_an_event_is_published)",
    ),
    "cancelled-waiter-keeps-its-slot": (
        "src/read/waiters.rs",
        "let permit = self.slots.clone().try_acquire_owned().map_err(|_| NoSlot::Full)?;",
        "let permit = self.slots.clone().try_acquire_owned().map_err(|_| NoSlot::Full)?;\n        let permit = {\n            permit.forget();\n            Arc::new(Semaphore::new(1)).try_acquire_owned().map_err(|_| NoSlot::Full)?\n        };",
        "test(waiters_are_bounded_and_released_when_the_client_goes_away)",
    ),
    "xacml-renamed-attribute": (
        "src/authz/request.rs",
        'r = r.with("urn:altinn:appresource", "events");',
        'r = r.with("urn:altinn:app-resource", "events");',
        "test(the_multi_request_is_altinns_wire_format)",
    ),
    "xacml-nulls-refused": (
        "src/authz/xacml.rs",
        '    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]\n    pub obligations',
        '    #[serde(default, skip_serializing_if = "Vec::is_empty")]\n    pub obligations',
        "test(altinns_pdp_answer_is_read_as_altinn_means_it)",
    ),
    # Issue 13: hardening.
    "no-list-limit": (
        "src/domain/query.rs",
        "if values.len() > MAX_LIST_VALUES {",
        "if false && values.len() > MAX_LIST_VALUES {",
        "test(huge_filter_lists_and_values_are_400s)",
    ),
    "time-conversion-panics": (
        "src/domain/query.rs",
        "let utc = parsed.map_err(|_| text())?.checked_to_offset(time::UtcOffset::UTC);",
        "let utc = Some(parsed.map_err(|_| text())?.to_offset(time::UtcOffset::UTC));",
        "test(times_beyond_what_the_service_represents_are_400s)",
    ),
    "cursor-not-bound-to-its-feed": (
        "src/api/cursor.rs",
        'format!("altinn-events/cursor/v1|{}", feed.key()).into_bytes()',
        'let _ = feed;\n    b"altinn-events/cursor/v1".to_vec()',
        "test(cursors_are_opaque_bound_to_their_feed_and_unforgeable)",
    ),
    "subject-not-checked-against-instance": (
        "src/domain/cloud_event.rs",
        "if subject != expected {",
        "if false && subject != expected {",
        "test(an_app_event_must_be_about_the_party_of_its_instance)",
    ),
    "feed-party-not-checked": (
        "src/read/mod.rs",
        "fn belongs_to(feed: &FeedId, record: &crate::domain::EventRecord) -> bool {",
        "fn belongs_to(feed: &FeedId, record: &crate::domain::EventRecord) -> bool {\n    if true {\n        return true;\n    }",
        "test(an_app_event_must_be_about_the_party_of_its_instance)",
    ),
    "no-connection-timeouts": (
        "src/api/server.rs",
        "if self.running.load(Ordering::SeqCst) > 0 {",
        "if true || self.running.load(Ordering::SeqCst) > 0 {",
        "test(connections_that_stall_are_closed_and_long_polls_are_not)",
    ),
    "no-connection-cap": (
        "src/api/server.rs",
        "let connections = Arc::new(Semaphore::new(limits.max_connections));",
        "let connections = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));",
        "test(connections_beyond_the_cap_get_503)",
    ),
    "one-pool-for-all-waiters": (
        "src/read/waiters.rs",
        "if held >= self.per_holder {",
        "if false && held >= self.per_holder {",
        "test(long_poll_slots_are_shared_fairly_between_callers)",
    ),
    "leftmost-forwarded-for": (
        "src/api/instance.rs",
        "let entry = entries.len().checked_sub(hops).map(|i| entries[i])?;",
        "let entry = entries.first().copied()?;",
        "test(anonymous_rate_limits_follow_the_proxys_address_and_verified_keys)",
    ),
    "wrong-keys-spend-the-instance-budget": (
        "src/api/instance.rs",
        "let instance = instance_id(&party, &guid).ok_or_else(denied)?;",
        "let instance = instance_id(&party, &guid).ok_or_else(denied)?;\n    state.limiter.check(&format!(\"instance:{instance}\"), limits.rate_per_minute_per_instance).map_err(|retry_after_seconds| ApiError::TooManyRequests { retry_after_seconds })?;",
        "test(anonymous_rate_limits_follow_the_proxys_address_and_verified_keys)",
    ),
    "issuer-optional": (
        "src/auth/oidc.rs",
        'v.set_required_spec_claims(&["exp", "iss"]);',
        'v.set_required_spec_claims(&["exp"]);',
        "test(a_token_without_the_issuer_is_refused)",
    ),
    "request-id-echoed-verbatim": (
        "src/api/mod.rs",
        "        .layer(middleware::from_fn(observe::plain_request_id))",
        "",
        "test(only_plain_short_request_ids_are_echoed)",
    ),
    "claim-values-in-logs": (
        "src/auth/mod.rs",
        'ErrorKind::Json(_) | ErrorKind::Utf8(_) => "header or claims not readable",',
        "ErrorKind::Json(_) | ErrorKind::Utf8(_) => return Self::Invalid(e.to_string()),",
        "test(no_identity_number_token_key_or_cookie_reaches_the_logs)",
    ),
    "control-characters-stored": (
        "src/domain/cloud_event.rs",
        "Some(Value::String(s)) if s.chars().any(char::is_control) => Err(CloudEventError::ControlCharacter(field)),",
        "",
        "test(control_characters_in_event_fields_are_400s)",
    ),
    "anonymous-path-error-tells": (
        "src/api/instance.rs",
        "let instance = instance_id(&party, &guid).ok_or_else(denied)?;",
        'let instance = instance_id(&party, &guid).ok_or_else(|| ApiError::BadRequest("bad path".into()))?;',
        "test(path_errors_are_problems_and_the_anonymous_endpoint_answers_one_way)",
    ),
    "instance-guid-spelled-as-given": (
        "src/domain/cloud_event.rs",
        'valid.then(|| format!("{party}/{}", guid.to_ascii_lowercase()))',
        'valid.then(|| format!("{party}/{guid}"))',
        "test(instance_ids_have_one_spelling_for_events_and_keys)",
    ),
    "dev-folder-left-behind": (
        "src/localtest/setup.rs",
        "if let Err(e) = std::fs::remove_dir_all(&self.0) {",
        "if let Err(e) = Ok::<(), std::io::Error>(()) {",
        "test(dev_mode_leaves_no_temporary_folder_behind)",
    ),
    # Issue 14: Altinn's clients work unchanged.
    "routes-exact-only": (
        "src/api/server.rs",
        "super::routes::canonicalize(&mut req);",
        "",
        "test(routes_take_a_trailing_slash_and_any_case)",
    ),
    "service-owner-scope-refused": (
        "src/api/query.rs",
        ", SCOPE_SERVICE_OWNER.to_owned()]",
        "]",
        "test(service_owner_scopes_open_the_app_owners_feed)",
    ),
    "filters-match-exactly": (
        "src/feeds/events/filter_sql.rs",
        """format!("LOWER(c.{field}) LIKE {p} ESCAPE '!'")""",
        """format!("c.{field} = {p}")""",
        "test(type_and_source_filters_match_like_ilike)",
    ),
    "eventtype-ignored": (
        "src/domain/query.rs",
        '"type" | "eventtype" => p.types.push(v),',
        '"type" => p.types.push(v),',
        "test(type_and_source_filters_match_like_ilike)",
    ),
    "id-alone-identifies-events": (
        "src/feeds/events/docs.rs",
        "    id.push('~');\n    for b in &digest[..8] {",
        "    for b in &digest[..0] {",
        "test(one_id_from_two_sources_is_two_events)",
    ),
    "next-forgets-the-alternative-subject": (
        "src/api/query.rs",
        'let extra: Vec<(&str, &str)> = alt_header.iter().map(|v| ("alternativeSubject", v.as_str())).collect();',
        "let extra: Vec<(&str, &str)> = Vec::new();",
        "test(next_carries_the_alternative_subject)",
    ),
    "generic-size-below-1-refused": (
        "src/domain/query.rs",
        "Some(Ok(n)) if n < 1 => Ok(DEFAULT_SIZE),",
        'Some(Ok(n)) if n < 1 => Err("size".to_owned()),',
        "test(generic_size_is_read_as_altinn_reads_it)",
    ),
    "identity-number-to-the-pdp": (
        "src/authz/request.rs",
        "return persons.get(ssn).map(|uuid| (PARTY_UUID.to_owned(), uuid.clone()));",
        'let _ = persons;\n        return Some(("urn:altinn:person:identifier-no".to_owned(), ssn.to_owned()));',
        "test(events_about_a_person_are_decided_by_the_persons_party)",
    ),
    "system-users-unknown": (
        "src/auth/claims.rs",
        'let details: Vec<&Value> = match claims.get("authorization_details") {',
        'let details: Vec<&Value> = match claims.get("authorization_details").filter(|_| false) {',
        "test(system_users_read_their_organisations_events)",
    ),
    # Issue 16: push delivery.
    "failed-push-counts-as-delivered": (
        "src/deliver/retry.rs",
        "    if outcome.delivered() {",
        "    if outcome.delivered() || outcome.status.is_some() {",
        "test(a_failing_endpoint_holds_later_events_back_and_gets_everything_when_it_recovers)",
    ),
    "retries-ignore-the-schedule": (
        "src/deliver/retry.rs",
        "next_retry_ms: Some(now_ms.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))),",
        "next_retry_ms: Some(now_ms + 10 + 0 * u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),",
        "test(an_exhausted_schedule_disables_and_enable_delivers_the_rest)",
    ),
    "pushes-skip-the-pdp": (
        "src/deliver/deliverer.rs",
        "                caller: Some(Caller::of_subscription(&subscription)),",
        "                caller: { let _ = &subscription; None },",
        "test(each_consumer_is_pushed_only_what_the_pdp_permits_it)",
    ),
    "pushes-unsigned": (
        "src/webhooks/mod.rs",
        "let signature = signing::signature_header(secrets, id, timestamp, body);",
        "let signature = signing::signature_header(&[], id, timestamp, body);",
        "test(events_from_concurrent_publishers_arrive_in_feed_order_once_and_signed)",
    ),
    "deleted-subscription-still-pushed": (
        "src/deliver/deliverer.rs",
        "let _ = self.delivery.states.remove(id).await;\n                    return Step::End;",
        "let _ = self.delivery.states.remove(id).await;",
        "test(replay_resends_from_the_given_position_and_delete_stops_pushes)",
    ),
    "buckets-released-before-checkpoints": (
        "src/deliver/mod.rs",
        "        while tasks.join_next().await.is_some() {}\n        self.release_all().await;",
        "        self.release_all().await;\n        while tasks.join_next().await.is_some() {}",
        "test(a_stopping_instance_finishes_its_push_and_stores_the_checkpoint_before_it_lets_go)",
    ),
    "dead-holders-buckets-found-a-round-late": (
        "src/deliver/coordinator.rs",
        "(self.settings.lease / 3).min(Duration::from_millis(expires_ms.saturating_sub(self.now_ms()) + 50))",
        "(self.settings.lease / 3).max(Duration::from_millis(expires_ms.saturating_sub(self.now_ms()) * 0))",
        "test(one_instance_delivers_each_subscription_and_hands_it_over_when_it_stops_or_dies)",
    ),
    "old-copies-not-found": (
        "src/feeds/events/reader.rs",
        "        if recent == 0 {\n            return Ok(None);\n        }",
        "        if recent < u64::MAX {\n            return Ok(None);\n        }",
        "test(the_repairer_finds_old_copies_in_a_long_feed_and_repeats_nothing)",
    ),
    "publishes-not-shed": (
        "src/publish.rs",
        "self.in_flight = Arc::new(tokio::sync::Semaphore::new(n.max(1)));",
        "self.in_flight = Arc::new(tokio::sync::Semaphore::new(tokio::sync::Semaphore::MAX_PERMITS + 0 * n));",
        "test(publishes_beyond_what_an_instance_takes_are_shed_with_retry_after)",
    ),
    "append-queue-unbounded": (
        "src/feeds/events/writer.rs",
        "let (tx, rx) = mpsc::channel(self.max_queued);",
        "let (tx, rx) = mpsc::channel(1 << 20);",
        "test(a_full_append_queue_refuses_publishes_before_storing_anything)",
    ),
    "pdp-busy-reported-as-an-outage": (
        "src/api/error.rs",
        "            ReadError::Authorization(PdpError::Busy) => Self::Overloaded,\n",
        "",
        "test(pdp_requests_beyond_the_slots_are_refused_as_overload)",
    ),
    "shared-read-hides-a-newer-append": (
        "src/feeds/events/shared_reads.rs",
        "inflight.get(&key).filter(|f| f.version >= version && f.began.elapsed() < KEEP)",
        "inflight.get(&key).filter(|f| f.began.elapsed() < KEEP)",
        "test(concurrent_reads_share_one_and_a_newer_append_starts_another)",
    ),
    "json-log-fields-recorded-without-a-comma": (
        "src/telemetry/json_log.rs",
        "let first = current.fields.is_empty();",
        "let first = true;",
        "test(lines_are_tracing_subscribers_json_lines)",
    ),
    "written-document-loses-its-instance": (
        "src/feeds/events/docs.rs",
        "resourceinstance: record.resourceinstance.as_deref(),",
        "resourceinstance: None,",
        "test(a_written_document_reads_back_as_the_event_document)",
    ),
    "page-query-without-the-seal-flag": (
        "src/feeds/events/docs.rs",
        '"c.seq, c.sealed, {',
        '"c.seq, {',
        "test(old_segments_are_sealed_and_read_past)",
    ),
    "no-health-alias": (
        "src/api/health.rs",
        "        .routes(routes!(health))",
        "",
        "test(health_answers_like_live)",
    ),
    # Issue 28: the subscription surface, metrics, and what one consumer can do to another.
    "json-body-of-any-media-type": (
        "src/api/extract.rs",
        "        if !is_json_media_type(req.headers()) {\n            return Err(ApiError::UnsupportedMediaType(NOT_JSON.into()));",
        "        if false {\n            return Err(ApiError::UnsupportedMediaType(NOT_JSON.into()));",
        "test(cross_site_requests_cannot_create_or_change_subscriptions)",
    ),
    "cookie-without-same-origin-proof": (
        "src/api/extract.rs",
        "if !cookie_request_allowed(&parts.method, &parts.headers, own.as_deref()) {",
        "if false {",
        "test(cross_site_requests_cannot_create_or_change_subscriptions)",
    ),
    "metrics-method-label-from-the-client": (
        "src/api/observe.rs",
        '        _ => "other",',
        "        _ => Box::leak(method.as_str().to_owned().into_boxed_str()),",
        "test(metrics_series_do_not_grow_with_odd_requests_or_subscriptions)",
    ),
    "metrics-lag-series-per-subscription": (
        "src/deliver/deliverer.rs",
        '        self.delivery.lags.lock().expect("lags lock").insert(id, crate::deliver::Lag::default());',
        '        metrics::gauge!("delivery_lag_events", "subscription" => id.to_string()).set(0.0);',
        "test(metrics_series_do_not_grow_with_odd_requests_or_subscriptions)",
    ),
    "validations-one-at-a-time": (
        "src/subscribe/validator.rs",
        "            tasks.spawn(async move { (consumer, this.attempt(stored).await) });",
        "            let done = (consumer, this.attempt(stored).await);\n            tasks.spawn(async move { done });",
        "test(a_tarpit_endpoint_delays_only_its_own_consumer)",
    ),
    "pushes-share-one-pool": (
        "src/webhooks/slots.rs",
        "consumers: Arc::new(Table::new(limits.per_consumer)),",
        "consumers: Arc::new(Table::new(limits.total)),",
        "test(a_tarpit_endpoint_delays_only_its_own_consumer)",
    ),
    "no-subscription-limit": (
        "src/feeds/subscriptions/mod.rs",
        "            if self.ids_of(consumer).await?.len() >= limit {",
        "            if false {",
        "test(a_consumer_holds_a_bounded_number_of_subscriptions)",
    ),
    "racing-creates-pass-the-limit": (
        "src/feeds/subscriptions/mod.rs",
        "                    if before >= limit {",
        "                    if false {",
        "test(creates_that_pass_the_limit_check_together_still_keep_the_limit)",
    ),
    "enable-retries-a-failing-endpoint-at-once": (
        "src/subscribe/mod.rs",
        "            if state.status != DeliveryStatus::Disabled {\n                return false;\n            }\n            resume(state);",
        "            resume(state);",
        "test(enable_replay_and_validate_do_not_retry_sooner_than_the_schedule)",
    ),
    "replay-retries-a-failing-endpoint-at-once": (
        "src/subscribe/mod.rs",
        "            if state.status == DeliveryStatus::Disabled {\n                resume(state);\n            }",
        "            resume(state);",
        "test(enable_replay_and_validate_do_not_retry_sooner_than_the_schedule)",
    ),
    "validate-restarts-a-running-validation": (
        "src/subscribe/mod.rs",
        "                if s.validation.status == ValidationStatus::Validating {\n                    return false;\n                }",
        "",
        "test(enable_replay_and_validate_do_not_retry_sooner_than_the_schedule)",
    ),
    "webhook-id-holds-the-position": (
        "src/deliver/deliverer/push.rs",
        "        let message = message::message_id(self.subscription.id, self.state.generation, event);",
        '        let message = format!("{}-{}-{}", self.subscription.id, self.state.generation, position);',
        "test(a_subscription_tells_its_consumer_nothing_of_hidden_events)",
    ),
    "hidden-after-id-is-found": (
        "src/read/mod.rs",
        "    Ok(visible.then_some(after))",
        "    Ok(Some(after).filter(|_| visible || true))",
        "test(a_subscription_tells_its_consumer_nothing_of_hidden_events)",
    ),
    "endpoint-resolved-before-permission": (
        "src/subscribe/mod.rs",
        "        self.authorize(principal, &kind, &filters).await?;\n",
        "        self.sender.check_endpoint(&end_point).await.map_err(|e| SubscribeError::Invalid(e.to_string()))?;\n        self.authorize(principal, &kind, &filters).await?;\n",
        "test(the_endpoint_is_checked_after_permissions_and_names_no_address)",
    ),
    "nat64-is-public": (
        "src/webhooks/address.rs",
        "        return is_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));",
        "        return o[0] != 0xff;",
        "test(the_endpoint_is_checked_after_permissions_and_names_no_address) | test(only_public_addresses)",
    ),
    "any-port": (
        "src/webhooks/mod.rs",
        "        if !self.settings.allowed_ports.contains(&port) {",
        "        if false {",
        "test(the_endpoint_is_checked_after_permissions_and_names_no_address) | test(only_allowed_ports)",
    ),
    "pushes-through-a-proxy-from-the-environment": (
        "src/webhooks/mod.rs",
        "            .no_proxy()\n",
        "",
        "test(pushes_ignore_proxies_from_the_environment)",
    ),
    "control-characters-in-subscription-filters": (
        "src/subscribe/mod.rs",
        "        if value.chars().any(char::is_control) {",
        "        if false {",
        "test(control_characters_odd_extensions_and_unparsable_instances_are_refused)",
    ),
    "extension-attributes-unchecked": (
        "src/domain/cloud_event.rs",
        "    check_extensions(&map)?;\n",
        "",
        "test(control_characters_odd_extensions_and_unparsable_instances_are_refused)",
    ),
    "unparsable-instance-waved-through": (
        "src/domain/cloud_event.rs",
        "    if app.malformed_instance {",
        "    if false {",
        "test(control_characters_odd_extensions_and_unparsable_instances_are_refused)",
    ),
    "only-the-first-forwarded-line": (
        "src/api/instance.rs",
        "        for line in headers.get_all(name) {",
        "        for line in headers.get(name) {",
        "test(rate_limits_read_every_forwarded_line_and_only_addresses)",
    ),
    "forwarded-entries-as-keys": (
        "src/api/instance.rs",
        "        parse_address(entry)\n    });\n    rate_key(from_header.unwrap_or_else(|| peer.ip()))",
        "        Some(parse_address(entry).map(rate_key).unwrap_or_else(|| entry.to_owned()))\n    });\n    from_header.unwrap_or_else(|| rate_key(peer.ip()))",
        "test(rate_limits_read_every_forwarded_line_and_only_addresses)",
    ),
    "full-long-poll-pool-without-retry-after": (
        "src/api/error.rs",
        "        if matches!(self, Self::Overloaded | Self::WaitersFull) {",
        "        if matches!(self, Self::Overloaded) {",
        "test(a_full_long_poll_pool_says_when_to_retry)",
    ),
    # Issue 30: delivery's decisions, unit-tested without a store.
    "retry-due-from-the-last-due-time": (
        "src/deliver/retry.rs",
        "next_retry_ms: Some(now_ms.saturating_add(",
        "next_retry_ms: Some(state.next_retry_ms.unwrap_or(now_ms).saturating_add(",
        "test(/deliver::retry::/)",
    ),
    "disabled-one-failure-early": (
        "src/deliver/retry.rs",
        "    match schedule.get(failures as usize - 1) {",
        "    match schedule.get(failures as usize) {",
        "test(/deliver::retry::/)",
    ),
    "recovery-not-stored-at-once": (
        "src/deliver/retry.rs",
        "next: Next::Delivered { recovered: state.status != DeliveryStatus::Active },",
        "next: Next::Delivered { recovered: false },",
        "test(/deliver::retry::/)",
    ),
    "push-filters-match-as-patterns": (
        "src/feeds/events/filter_sql.rs",
        '            FieldMatch::TypeEquals(t) => ("type", like_literal(t)),',
        '            FieldMatch::TypeEquals(t) => ("type", t.to_lowercase()),',
        "test(/feeds::events::filter_sql::/)",
    ),
    "cosmos-connect-waits-up-to-30s": (
        "src/lib.rs",
        "    (backoff * 2).min(Duration::from_secs(4))",
        "    (backoff * 2).min(Duration::from_secs(30))",
        "test(the_wait_between_tries_to_reach_cosmos_stays_short)",
    ),
    # Issue 31: what an idle deployment pays, the repairer's requests, store
    # generations.
    "change-feed-never-backs-off": (
        "src/feeds/coordination/changes.rs",
        "if found { self.busy } else { (last * 2).clamp(self.busy, self.idle.max(self.busy)) }",
        "self.busy",
        "test(the_wait_doubles_while_nothing_changes_and_is_short_again_on_a_change)",
    ),
    "repairer-looks-up-every-event": (
        "src/feeds/events/repairer.rs",
        "due.into_iter().filter(|d| !seen.contains(&d.copy) && !previous.contains(&d.copy)).collect();",
        "due.into_iter().collect();",
        "test(the_repairer_looks_up_only_the_events_whose_copy_the_change_feed_did_not_bring)",
    ),
    "cursor-of-another-generation-read": (
        "src/api/paging.rs",
        "Some(current) if current == opened.generation => Some(opened.position),",
        "Some(_) => Some(opened.position),",
        "test(after_a_restore_old_cursors_are_refused_and_subscribers_get_what_takes_the_lost_positions)",
    ),
    "deliverer-ignores-a-new-store-generation": (
        "src/deliver/deliverer/checkpoint.rs",
        "if current == self.state.store_generation {",
        "if current == current {",
        "test(after_a_restore_old_cursors_are_refused_and_subscribers_get_what_takes_the_lost_positions)",
    ),
    # Issue 32: the lag gauges count delivery's own lag only.
    "failing-endpoint-lags-as-delivery": (
        "src/deliver/deliverer/push.rs",
        "                self.clear_lag();\n",
        "",
        "test(the_lag_gauges_show_a_subscription_behind_while_its_endpoint_answers)",
    ),
    "webhook-secrets-at-rest-in-plain-text": (
        "src/feeds/subscriptions/mod.rs",
        "Ok(StoredSecret { value: seal_secret(sealer, s.id, &x.value)?, expires_ms: x.expires_ms })",
        "Ok(StoredSecret { value: x.value.expose_secret().to_owned(), expires_ms: x.expires_ms })",
        "test(webhook_secrets_are_sealed_at_rest_and_still_sign_after_a_ring_rotation)",
    ),
    "webhook-secret-ring-not-reloaded": (
        "src/secrets_reload.rs",
        "&& self.webhook_secrets.replace(webhook_ring)",
        "&& false",
        "test(webhook_secrets_are_sealed_at_rest_and_still_sign_after_a_ring_rotation)",
    ),
    "unreadable-subscription-looks-deleted": (
        "src/feeds/subscriptions/mod.rs",
        "            return Err(StoreError::Config(format!(",
        "            return Ok(None); #[allow(unreachable_code)] return Err(StoreError::Config(format!(",
        "test(webhook_secrets_are_sealed_at_rest_and_still_sign_after_a_ring_rotation)",
    ),
    "hot-feed-never-cut": (
        "src/feeds/events/writer.rs",
        "if cut.is_some_and(|cut| h.count >= cut) {",
        "if cut.is_some_and(|cut| h.count >= cut && false) {",
        "test(a_hot_feeds_segments_are_cut_short_and_read_whole)",
    ),
    "seal-tails-spend-the-scan-budget": (
        "src/feeds/events/reader.rs",
        "(self.next - from).saturating_sub(self.skipped)",
        "self.next - from",
        "test(a_hot_feeds_segments_are_cut_short_and_read_whole)",
    ),
    "publisher-ids-cut-short": (
        "src/feeds/events/writer.rs",
        ".filter(|_| items.iter().all(|p| p.ids == IdSource::Server))",
        ".filter(|_| true)",
        "test(a_hot_feeds_segments_are_cut_short_and_read_whole)",
    ),
    "publisher-retry-appends-its-second-copy-again": (
        "src/feeds/events/mod.rs",
        "let copy = if first.repeat && ids == IdSource::Publisher {",
        "let copy = if false {",
        "test(a_hot_feeds_segments_are_cut_short_and_read_whole)",
    ),
    "cut-segments-cost-a-read-nothing": (
        "src/feeds/events/reader.rs",
        "self.skipped += tail - tail.min(SEGMENT_CHARGE);",
        "self.skipped += tail;",
        "test(a_hot_feeds_segments_are_cut_short_and_read_whole)",
    ),
    "restarted-import-looks-two-segments-back": (
        "src/feeds/events/reader.rs",
        "let oldest = newest.segment.saturating_sub(STORED_ORIGIN_SEGMENTS - 1);",
        "let oldest = newest.segment.saturating_sub(1);",
        "test(a_restarted_import_finds_its_events_behind_cut_segments)",
    ),
    "repairer-repairs-imported-events": (
        "src/feeds/events/repairer.rs",
        "if doc.get(\"aseq\").is_some() {",
        "if false {",
        "test(a_page_gives_the_events_to_check_and_the_copies_it_brings)",
    ),
    "delivery-states-in-the-events-container": (
        "src/feeds/subscriptions/delivery.rs",
        "Self { container: store.cosmos().subscriptions.clone() }",
        "Self { container: store.cosmos().container.clone() }",
        "test(the_api_and_the_deliver_role_split_the_work)",
    ),
    "console-allows-inline-script": (
        "src/api/console.rs",
        "default-src 'none'; script-src 'self';",
        "default-src 'none'; script-src 'self' 'unsafe-inline';",
        "test(the_console_is_served_with_a_strict_content_security_policy)",
    ),
    "import-appends-heat-a-feed": (
        "src/feeds/events/writer.rs",
        "rate.add(items.iter().filter(|p| p.deadline_ms.is_some()).count() as u64, Instant::now());",
        "rate.add(items.len() as u64, Instant::now());",
        "test(a_hot_feeds_segments_are_cut_short_and_read_whole)",
    ),
}


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = sys.argv[1:]
    # Every entry must still name its code (exactly once), sampled or not:
    # a refactoring that moved the code must move the entry with it.
    stale = [
        f"{name}: {path}"
        for name, (path, old, _new, _test) in MUTATIONS.items()
        if not os.path.exists(os.path.join(repo, path)) or open(os.path.join(repo, path)).read().count(old) != 1
    ]
    if stale:
        sys.exit("stale mutation entries (the text to break is not in the code once):\n  " + "\n  ".join(stale))
    if args[:1] == ["--sample"]:
        seed = os.environ.get("MUTATIONS_SEED") or subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        names = random.Random(seed).sample(sorted(MUTATIONS), int(args[1]))
        print(f"mutation sample (MUTATIONS_SEED={seed}): {' '.join(names)}", flush=True)
    else:
        names = args or list(MUTATIONS)
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        sys.exit(f"unknown mutations: {unknown}")
    work = os.environ.get("MUTATIONS_DIR") or tempfile.mkdtemp(prefix="altinn-events-mutations-")
    copy = os.path.join(work, "src-copy")
    target = os.environ.get("MUTATIONS_TARGET") or os.path.join(work, "target")
    if os.path.exists(copy):
        shutil.rmtree(copy)
    shutil.copytree(repo, copy, ignore=shutil.ignore_patterns("target", ".git", "node_modules"))
    # The copy is another package (its library and binary keep their names):
    # cargo then keeps its artifacts apart from the checkout's in a shared
    # target directory. Under the same name they would share file names and
    # fingerprints, and the checkout's next build could take a mutant's
    # binary for its own, fresh.
    manifest = os.path.join(copy, "Cargo.toml")
    text = open(manifest).read()
    if text.count('\nname = "altinn-events"\n') != 1:
        sys.exit("Cargo.toml: the package name is not where the mutation copy renames it")
    text = text.replace('\nname = "altinn-events"\n', '\nname = "altinn-events-mutant"\n', 1)
    text += '\n[lib]\nname = "altinn_events"\n\n[[bin]]\nname = "altinn-events"\npath = "src/main.rs"\n'
    open(manifest, "w").write(text)
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    results = []
    for name in names:
        path, old, new, test = MUTATIONS[name]
        file = os.path.join(copy, path)
        original = open(file).read()
        if original.count(old) != 1:
            results.append((name, "STALE (the text to break is not in the code once)"))
            continue
        open(file, "w").write(original.replace(old, new))
        try:
            run = subprocess.run(
                ["cargo", "nextest", "run", "--no-fail-fast", "-E", test],
                cwd=copy, env=env, capture_output=True, text=True,
            )
            out = run.stdout + run.stderr
            if "error[" in out or "could not compile" in out:
                results.append((name, "DOES NOT COMPILE"))
            elif run.returncode == 0:
                results.append((name, f"SURVIVED: {test} still passes"))
            else:
                results.append((name, f"caught by {test}"))
        finally:
            open(file, "w").write(original)
        print(f"{name}: {results[-1][1]}", flush=True)
    survived = [r for r in results if not r[1].startswith("caught")]
    print(f"\n{len(results) - len(survived)} of {len(results)} mutations caught")
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
