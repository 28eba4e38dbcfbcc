//! Configuration: from the [`RawObject`](crate::source::RawObject)s that sources emit to
//! typed, validated objects and the snapshot translation reads.
//!
//! ```text
//!  SourceEvent ─▶ store::ConfigStore ─ parse::check ─▶ kinds::* (serde, unknown fields denied)
//!                        │                  └─▶ validate::* (Istio's webhook rules)
//!                        ├─ validate::cross (istioctl analyze: IST0109, IST0101; Gateway API
//!                        │                   RefNotPermitted, NotAllowedByListeners)
//!                        └─▶ Arc<snapshot::ConfigSnapshot> (last good version of every object;
//!                             persistent maps, so consecutive snapshots share what did not change)
//! ```
//!
//! Bad input never takes good configuration down: an invalid object is reported as a
//! [`Diagnostic`] naming the object, its file and line, the field and the reason, and the
//! previous version of that object (if any) stays in force.

pub mod diagnostic;
pub mod duration;
pub mod kinds;
pub mod parse;
pub mod snapshot;
pub mod store;
pub mod validate;

pub use diagnostic::{Diagnostic, Severity};
pub use duration::{DurationError, Durations, GatewayDuration, IstioDuration};
pub use kinds::{ConfigObject, Kind, ObjectMeta};
pub use parse::{Checked, check, parse};
pub use store::{ConfigSnapshot, ConfigStore, Objects, SourceId};
