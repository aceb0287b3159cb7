//! A subscription's filters as a read of its feed applies them: Altinn's
//! push matching, as typed matches (the store turns them into its query).
//!
//! Invariants it keeps:
//! - **Altinn's matching**: the type equal, the source a prefix (both
//!   ignoring case, and no character of a filter a wildcard); the
//!   resource equal when the feed is a subject's (a subject feed holds
//!   several resources'; a resource feed only its own). The subject is the
//!   feed itself.
//! - **What Altinn pushed is not pushed again**: an imported subscription
//!   leaves out the events imported with an Altinn number up to its
//!   cut-over.

use crate::domain::subscription::Subscription;
use crate::domain::{FieldMatch, Filters};

/// What a read of `subscription`'s feed keeps.
pub fn filters_of(subscription: &Subscription) -> Filters {
    let f = &subscription.filters;
    let types = f.type_filter.iter().map(|t| FieldMatch::TypeEquals(t.clone()));
    let sources = f.source_filter.iter().map(|s| FieldMatch::SourceStartsWith(s.clone()));
    Filters {
        matches: types.chain(sources).collect(),
        resource: f.subject_filter.as_ref().map(|_| f.resource_filter.clone()),
        // Imported from Altinn: what Altinn pushed is not pushed again.
        imported_after: subscription.imported.as_ref().and_then(|i| i.pushed_through),
        ..Filters::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::subscription::{Imported, SubscriptionFilters};

    const RESOURCE: &str = "urn:altinn:resource:app_ttd_apps-test";

    fn subscription(filters: SubscriptionFilters) -> Subscription {
        Subscription::example(filters)
    }

    fn resource_only() -> SubscriptionFilters {
        SubscriptionFilters::of_resource(RESOURCE)
    }

    #[test]
    fn a_resource_feed_keeps_everything_without_filters() {
        assert!(filters_of(&subscription(resource_only())).is_empty());
    }

    #[test]
    fn type_and_source_are_typed_matches_of_their_plain_values() {
        let s = subscription(SubscriptionFilters {
            source_filter: Some("https://ttd.apps.altinn.no/ttd/apps_test%".into()),
            type_filter: Some("app.instance.process_completed".into()),
            ..resource_only()
        });
        assert_eq!(
            filters_of(&s),
            Filters {
                matches: vec![
                    FieldMatch::TypeEquals("app.instance.process_completed".into()),
                    FieldMatch::SourceStartsWith("https://ttd.apps.altinn.no/ttd/apps_test%".into()),
                ],
                ..Filters::default()
            }
        );
    }

    #[test]
    fn a_subject_feed_is_narrowed_to_the_resource() {
        let s = subscription(SubscriptionFilters {
            subject_filter: Some("/party/1337".into()),
            alternative_subject_filter: Some("/person/01039012345".into()),
            include_subunits: true,
            ..resource_only()
        });
        assert_eq!(filters_of(&s), Filters { resource: Some(RESOURCE.into()), ..Filters::default() });
    }

    #[test]
    fn an_imported_subscription_leaves_out_what_altinn_pushed() {
        let mut s = subscription(resource_only());
        s.imported = Some(Imported { pushed_through: Some(4711), row_digest: "d".into() });
        assert_eq!(filters_of(&s).imported_after, Some(4711));
        s.imported = Some(Imported { pushed_through: None, row_digest: "d".into() });
        assert_eq!(filters_of(&s).imported_after, None);
    }
}
