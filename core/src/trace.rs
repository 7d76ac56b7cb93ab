//! W3C trace context across the async hop (feature `otel`): an append made inside a span
//! records that span's `traceparent` and `tracestate` in the events' metadata, and whoever
//! handles a recorded event continues its trace, as the parent of its span while processing
//! live, or as a link (catch-up, rebuilds, batches of many traces), so that a span never
//! gets a parent in a days-old trace. Without the feature every function here does nothing.
//!
//! The spans are `tracing` spans; with a `tracing-opentelemetry` layer installed they are
//! exported to OpenTelemetry.

use crate::Metadata;

/// How a span continues the trace of the event it handles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Follow {
    /// The event's span is the parent (live processing).
    #[default]
    Parent,
    /// A link to the event's span (catch-up, replays, batches).
    Link,
    /// Nothing.
    Off,
}

/// Records the current span's trace context in `metadata`, unless it carries one already.
pub fn stamp(metadata: &mut Metadata) {
    #[cfg(feature = "otel")]
    if metadata.traceparent.is_none() {
        if let Some((traceparent, tracestate)) = otel::of(&tracing::Span::current()) {
            metadata.traceparent = Some(traceparent);
            metadata.tracestate = tracestate;
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = metadata;
}

/// `metadata` with the current span's trace context recorded, unless it carries one already
/// (borrowed, without a copy, when there is nothing to add).
pub fn stamped(metadata: &Metadata) -> std::borrow::Cow<'_, Metadata> {
    #[cfg(feature = "otel")]
    if metadata.traceparent.is_none() {
        if let Some((traceparent, tracestate)) = otel::of(&tracing::Span::current()) {
            let mut owned = metadata.clone();
            owned.traceparent = Some(traceparent);
            owned.tracestate = tracestate;
            return std::borrow::Cow::Owned(owned);
        }
    }
    std::borrow::Cow::Borrowed(metadata)
}

/// The trace context of `span` as W3C header values (`traceparent`, `tracestate`), for a
/// message that carries the trace on (the relay's publish).
pub fn context_of(span: &tracing::Span) -> Option<(String, Option<String>)> {
    #[cfg(feature = "otel")]
    return otel::of(span);
    #[cfg(not(feature = "otel"))]
    {
        let _ = span;
        None
    }
}

/// Makes `span` continue the trace recorded in `metadata`, per `how`.
pub fn follow(span: &tracing::Span, metadata: &Metadata, how: Follow) {
    #[cfg(feature = "otel")]
    otel::follow(span, metadata, how);
    #[cfg(not(feature = "otel"))]
    let _ = (span, metadata, how);
}

#[cfg(feature = "otel")]
mod otel {
    use std::str::FromStr;

    use opentelemetry::{
        trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
        Context,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::Follow;
    use crate::Metadata;

    pub(super) fn of(span: &tracing::Span) -> Option<(String, Option<String>)> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            return None;
        }
        let traceparent = format!(
            "00-{:032x}-{:016x}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        );
        let state = sc.trace_state().header();
        Some((traceparent, (!state.is_empty()).then_some(state)))
    }

    fn parse(metadata: &Metadata) -> Option<SpanContext> {
        let parts: Vec<&str> = metadata.traceparent.as_deref()?.split('-').collect();
        let [version, trace, span, flags] = parts.as_slice() else {
            return None;
        };
        if *version != "00" {
            return None;
        }
        let trace = TraceId::from_hex(trace).ok()?;
        let span = SpanId::from_hex(span).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let state = metadata
            .tracestate
            .as_deref()
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        let sc = SpanContext::new(trace, span, TraceFlags::new(flags), true, state);
        sc.is_valid().then_some(sc)
    }

    pub(super) fn follow(span: &tracing::Span, metadata: &Metadata, how: Follow) {
        let Some(sc) = parse(metadata) else { return };
        match how {
            Follow::Parent => {
                let _ = span.set_parent(Context::new().with_remote_span_context(sc));
            }
            Follow::Link => span.add_link(sc),
            Follow::Off => {}
        }
    }
}
