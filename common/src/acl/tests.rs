use proptest::prelude::*;

use super::*;

fn rules(text: &str) -> Rules {
    Rules::parse(text).unwrap()
}

#[test]
fn the_design_example_reads_app_and_nothing_else() {
    // DESIGN.md §6e / issue 20: `[kv] "app/" = "read"`.
    let r = rules("[kv]\n\"app/\" = \"read\"\n");
    assert!(allows([&r], &Resource::Kv("app/x"), Access::Read));
    assert!(!allows([&r], &Resource::Kv("app/x"), Access::Write));
    assert!(!allows([&r], &Resource::Kv("other/y"), Access::Read));
    assert!(!allows([&r], &Resource::Cp, Access::Read), "no rule denies");
}

#[test]
fn kv_keys_at_the_door_need_some_kv_rule_of_that_access() {
    let writer = rules("[kv]\n\"app/\" = \"write\"\n\"app/secret/\" = \"deny\"\n");
    assert!(allows([&writer], &Resource::KvKeys, Access::Write));
    let reader = rules("[kv]\n\"app/\" = \"read\"\n");
    assert!(allows([&reader], &Resource::KvKeys, Access::Read));
    assert!(!allows([&reader], &Resource::KvKeys, Access::Write));
    let none = rules("cp = \"write\"\n[kv]\n\"x/\" = \"deny\"\n");
    assert!(!allows([&none], &Resource::KvKeys, Access::Read));
}

#[test]
fn the_longest_prefix_wins_and_write_implies_read() {
    let r = rules(
        "cp = \"read\"\n[kv]\n\"\" = \"read\"\n\"app/\" = \"write\"\n\"app/secret/\" = \"deny\"\n",
    );
    assert!(allows([&r], &Resource::Cp, Access::Read));
    assert!(!allows([&r], &Resource::Cp, Access::Write));
    assert!(allows([&r], &Resource::Kv("zzz"), Access::Read));
    assert!(allows([&r], &Resource::Kv("app/a"), Access::Read));
    assert!(allows([&r], &Resource::Kv("app/a"), Access::Write));
    assert!(!allows([&r], &Resource::Kv("app/secret/k"), Access::Read));
}

#[test]
fn between_policies_the_most_specific_rule_wins_and_deny_breaks_ties() {
    let broad = rules("[keygroup]\n\"shop/\" = \"write\"\n");
    let narrow = rules("[keygroup]\n\"shop/prod/\" = \"read\"\n");
    let tie = rules("[keygroup]\n\"shop/\" = \"deny\"\n");
    let g = Resource::Keygroup("shop/prod/web");
    assert!(!allows([&broad, &narrow], &g, Access::Write));
    assert!(allows([&broad, &narrow], &g, Access::Read));
    assert!(!allows(
        [&broad, &tie],
        &Resource::Keygroup("shop/dev/x"),
        Access::Read
    ));
    assert!(!allows([], &g, Access::Read), "no policy, no access");
}

#[test]
fn unknown_kinds_and_levels_are_named() {
    let e = |t: &str| Rules::parse(t).unwrap_err().to_string();
    assert!(e("nodes = \"read\"").contains("\"nodes\""));
    assert!(e("cp = \"admin\"").contains("\"admin\""));
    assert!(e("[kv]\n\"a/\" = \"rw\"").contains("kv.\"a/\""));
    assert!(e("cp = 1").contains("cp must be a string"));
    assert!(e("kv = \"read\"").contains("[kv] must be a table"));
    assert!(e("cp = ").contains("not TOML"));
    assert_eq!(Rules::parse("").unwrap(), Rules::default());
}

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![Just(Access::Read), Just(Access::Write), Just(Access::Deny)]
}

proptest! {
    /// Adding a policy never lets through what a deny rule at least as specific denied, and a
    /// policy's own longest matching prefix decides for it alone.
    #[test]
    fn a_deny_is_never_overridden_by_a_less_specific_rule(
        deny_len in 0usize..6,
        others in proptest::collection::vec((0usize..6, access()), 0..6),
        wanted in access().prop_filter("a request needs read or write", |a| *a != Access::Deny),
    ) {
        let key = "abcdef";
        let deny = rules(&format!("[kv]\n{:?} = \"deny\"\n", &key[..deny_len]));
        let extra: Vec<Rules> = others
            .iter()
            .filter(|(len, _)| *len <= deny_len)
            .map(|(len, a)| {
                let level = match a { Access::Read => "read", Access::Write => "write", Access::Deny => "deny" };
                rules(&format!("[kv]\n{:?} = {level:?}\n", &key[..*len]))
            })
            .collect();
        let all: Vec<&Rules> = std::iter::once(&deny).chain(extra.iter()).collect();
        prop_assert!(!allows(all, &Resource::Kv(key), wanted));
    }
}
