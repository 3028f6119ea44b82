//! Authentication of the HA link when the master runs with `aclEnable=true`: the slave signs
//! its HELLO with its account (`aclAccessKey`/`aclSecretKey`, see [`super::proto`]) and the
//! master accepts it when the account is an `admin` account of its plain_acl.yml (a slave
//! receives every topic's messages) and the signature is that account's, made within
//! [`HELLO_CLOCK_SKEW_MAX`] of the master's clock. A slave connecting from a globally
//! white-listed address, or from its account's `whiteRemoteAddress`, needs no signature, as for
//! requests.

use std::net::IpAddr;
use std::time::Duration;

use super::error::AuthRefusal;
use super::proto::HelloAuth;
use crate::acl::Acl;

/// How far a HELLO's signing time may be from the master's clock (bounds a replayed HELLO).
pub const HELLO_CLOCK_SKEW_MAX: Duration = Duration::from_secs(300);

/// Whether a master with ACL `acl` serves the slave at `peer` that sent `auth`; the error is
/// the reason sent back to the slave.
pub fn check_hello(
    acl: &Acl,
    peer: IpAddr,
    auth: Option<&HelloAuth>,
    now_ms: u64,
) -> Result<(), AuthRefusal> {
    let rules = acl.rules();
    if rules.globally_white(peer) {
        return Ok(());
    }
    let Some(auth) = auth else {
        return Err(AuthRefusal::Unsigned);
    };
    let Some(account) = rules.account(&auth.access_key) else {
        return Err(AuthRefusal::UnknownAccount(auth.access_key.clone()));
    };
    if account.white.matches(peer) {
        return Ok(());
    }
    if !auth.verify(&account.secret_key) {
        return Err(AuthRefusal::BadSignature(auth.access_key.clone()));
    }
    let skew = now_ms.abs_diff(auth.timestamp_ms);
    if skew > HELLO_CLOCK_SKEW_MAX.as_millis() as u64 {
        return Err(AuthRefusal::ClockSkew {
            skew_s: skew / 1000,
            max_s: HELLO_CLOCK_SKEW_MAX.as_secs(),
        });
    }
    if !account.admin {
        return Err(AuthRefusal::NotAdmin(auth.access_key.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::manager::Sources;
    use crate::acl::Credentials;
    use crate::ha::proto::Hello;

    fn hello() -> Hello {
        Hello {
            shard: 1,
            shard_count: 2,
            segment_bytes: 1 << 20,
            lineage: 7,
            offset: 42,
            epochs: vec![],
            slave_addr: "10.0.0.2:10911".into(),
            master_epoch: 2,
        }
    }

    /// The signed HELLO as the master receives it (without the length prefix).
    fn received(creds: Option<&Credentials>, at: u64) -> (Hello, Option<HelloAuth>) {
        let bytes = hello().encode_signed(creds, at);
        Hello::decode_signed(&bytes[4..]).expect("decodes")
    }

    #[test]
    fn the_master_accepts_only_a_signed_hello_of_an_admin_account() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain_acl.yml");
        std::fs::write(
            &file,
            "accounts:\n  - {accessKey: replicator, secretKey: replsecret, admin: true}\n  - {accessKey: plainuser, secretKey: usersecret}\n",
        )
        .unwrap();
        let acl = Acl::load(Sources {
            main: file,
            dir: None,
        })
        .unwrap();
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let now = 1_800_000_000_000;
        let good = Credentials::new("replicator", "replsecret");
        let (h, auth) = received(Some(&good), now);
        assert_eq!(h, hello(), "the HELLO itself is unchanged");
        assert_eq!(check_hello(&acl, peer, auth.as_ref(), now), Ok(()));
        let (_, none) = received(None, now);
        assert!(check_hello(&acl, peer, none.as_ref(), now)
            .unwrap_err()
            .to_string()
            .contains("aclAccessKey"));
        let (_, bad) = received(Some(&Credentials::new("replicator", "wrong")), now);
        assert!(check_hello(&acl, peer, bad.as_ref(), now)
            .unwrap_err()
            .to_string()
            .contains("signature"));
        let (_, user) = received(Some(&Credentials::new("plainuser", "usersecret")), now);
        assert!(check_hello(&acl, peer, user.as_ref(), now)
            .unwrap_err()
            .to_string()
            .contains("admin"));
        let (_, old) = received(Some(&good), now - 600_000);
        assert!(check_hello(&acl, peer, old.as_ref(), now)
            .unwrap_err()
            .to_string()
            .contains("clock"));
        // A tampered HELLO (another offset) no longer matches its signature.
        let mut bytes = hello().encode_signed(Some(&good), now);
        bytes[4 + 30] ^= 1;
        let (_, tampered) = Hello::decode_signed(&bytes[4..]).unwrap();
        assert!(check_hello(&acl, peer, tampered.as_ref(), now).is_err());
    }
}
