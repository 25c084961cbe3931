//! JSON bodies of the HTTP API, decoded by the same functions the routes use and checked by the
//! same validation: the control plane's bodies, keygroup bodies, the host role's services.

use hivemind_control_plane::http::api::{AddVoter, EpochBody};
use hivemind_control_plane::http::extract::json_body;
use hivemind_host_role::registration::parse_services;
use hivemind_member::http::keygroups_api::{parse_body, CreateBody, UpdateBody};

use crate::choice;

/// The first byte picks the route; the rest is its body.
pub fn body(data: &[u8]) {
    let Some((route, body)) = choice(data) else {
        return;
    };
    match route % 5 {
        0 => drop(json_body::<Option<AddVoter>>(body)),
        1 => drop(json_body::<Option<EpochBody>>(body)),
        2 => drop(parse_body::<CreateBody>(body)),
        3 => {
            if let Ok(update) = parse_body::<UpdateBody>(body) {
                drop(update.deltas());
            }
        }
        _ => {
            if let Ok(services) = parse_services(body) {
                for s in &services {
                    // What parses writes back to the same definition.
                    let again = hivemind_host_role::registration::parse_service(&s.to_json(), "s");
                    assert_eq!(again.as_ref(), Ok(s));
                }
            }
        }
    }
}
