//! Plain ACL, RocketMQ 4.x's "ACL 1.0": accounts with secret keys, topic and group
//! permissions and white-listed addresses from plain_acl.yml, checked on every broker request
//! before any processor sees it.
//!
//! * [`sign`]: the request signature (HMAC-SHA1 over the sorted ext field values and the
//!   body), for signing our own requests and checking others'
//! * [`error`]: what is wrong with a file, an update or a tool's credentials
//! * [`address`]: white-list address patterns
//! * [`rules`]: the plain_acl.yml format, parsed and written
//! * [`check`]: what a request needs and whether its account has it
//! * [`manager`]: the files, the shared rules, reload on change, admin updates
//! * [`gate`]: the broker's entry point (refusals, the ACL request codes 50–54)
//!
//! Off (`aclEnable=false`, the default) the broker holds no [`Acl`] and the only cost per
//! request is the `None` check in the shard's request handler.

pub mod address;
pub mod check;
pub mod error;
pub mod gate;
pub mod manager;
pub mod rules;
pub mod sign;

pub use error::{AclError, AddressProblem};
pub use manager::Acl;
pub use sign::{sign, tool_credentials, Credentials};
