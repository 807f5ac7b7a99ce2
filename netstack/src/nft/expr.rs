//! Small builders over the `nftables` crate's typed schema.

use std::borrow::Cow;
use std::collections::HashSet;

use std::net::Ipv4Addr;

use nftables::expr::{
    Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, CT,
};
use nftables::schema::{
    Chain, Element, Map, NfCmd, NfListObject, NfObject, Rule, Set, SetFlag, SetType, SetTypeValue,
    Table,
};
use nftables::stmt::{Match, Operator, Reject, RejectType, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook, RejectCode};

use crate::addr::Subnet;

pub(super) fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}

pub(super) fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

pub(super) fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

pub(super) fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed(key),
        family: None,
        dir: None,
    }))
}

pub(super) fn num(n: u16) -> Expression<'static> {
    Expression::Number(u32::from(n))
}

pub(super) fn concat(v: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(v))
}

/// `ADDR/LEN` as a prefix expression.
pub(super) fn prefix(addr: Ipv4Addr, len: u8) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(addr.to_string())),
        len: u32::from(len),
    }))
}

/// The subnet as a prefix expression.
pub(super) fn subnet_prefix(subnet: &Subnet) -> Expression<'static> {
    prefix(subnet.network(), subnet.prefix_len())
}

pub(super) fn m(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

pub(super) fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    m(left, Operator::EQ, right)
}

pub(super) fn proto_port_key() -> Expression<'static> {
    concat(vec![meta(MetaKey::L4proto), payload("th", "dport")])
}

pub(super) fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

pub(super) fn drop_() -> Statement<'static> {
    Statement::Drop(None)
}

pub(super) fn add(o: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(o))
}

pub(super) fn table(family: NfFamily, name: &str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family,
        name: Cow::Owned(name.to_string()),
        handle: None,
    })
}

pub(super) fn base_chain(
    family: NfFamily,
    table: &str,
    name: &'static str,
    ty: NfChainType,
    hook: NfHook,
    prio: i32,
) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family,
        table: Cow::Owned(table.to_string()),
        name: Cow::Borrowed(name),
        _type: Some(ty),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })
}

pub(super) fn rule(
    family: NfFamily,
    table: &str,
    chain: &'static str,
    expr: Vec<Statement<'static>>,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family,
        table: Cow::Owned(table.to_string()),
        chain: Cow::Borrowed(chain),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: None,
    })
}

/// A set of `family` keyed by `key` (one type or a concatenation).
pub(super) fn set(
    family: NfFamily,
    table: &str,
    name: &'static str,
    key: &[SetType],
    interval: bool,
) -> NfListObject<'static> {
    NfListObject::Set(Box::new(Set {
        family,
        table: Cow::Owned(table.to_string()),
        name: Cow::Borrowed(name),
        set_type: key_type(key),
        flags: interval.then(|| HashSet::from([SetFlag::Interval])),
        ..Set::default()
    }))
}

fn key_type(key: &[SetType]) -> SetTypeValue<'static> {
    match key {
        [one] => SetTypeValue::Single(*one),
        many => SetTypeValue::Concatenated(Cow::Owned(many.to_vec())),
    }
}

/// A map of the `ip` family from `key` to `data`.
pub(super) fn map(
    table: &str,
    name: &'static str,
    key: &[SetType],
    data: SetType,
) -> NfListObject<'static> {
    NfListObject::Map(Box::new(Map {
        family: NfFamily::IP,
        table: Cow::Owned(table.to_string()),
        name: Cow::Borrowed(name),
        set_type: key_type(key),
        map: SetTypeValue::Single(data),
        ..Map::default()
    }))
}

/// Refuse what `matches` selects so the sender fails at once: a TCP reset
/// for TCP, ICMP "administratively prohibited" for the rest (two rules).
pub(super) fn reject_rules(matches: Vec<Statement<'static>>) -> [Vec<Statement<'static>>; 2] {
    let mut tcp = matches.clone();
    tcp.push(eq(meta(MetaKey::L4proto), s("tcp")));
    tcp.push(Statement::Reject(Some(Reject::new(
        Some(RejectType::TCPReset),
        None,
    ))));
    let mut other = matches;
    other.push(Statement::Reject(Some(Reject::new(
        Some(RejectType::ICMPX),
        Some(RejectCode::AdminProhibited),
    ))));
    [tcp, other]
}

/// A set element carrying a comment (`vm=<id>`, `pool`).
pub(super) fn elem_with_comment(val: Expression<'static>, comment: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Elem(nftables::expr::Elem {
        val: Box::new(val),
        timeout: None,
        expires: None,
        comment: Some(Cow::Owned(comment.to_string())),
        counter: None,
    }))
}

pub(super) fn element(
    family: NfFamily,
    table: &str,
    name: &'static str,
    elem: Vec<Expression<'static>>,
) -> NfListObject<'static> {
    NfListObject::Element(Element {
        family,
        table: Cow::Owned(table.to_string()),
        name: Cow::Borrowed(name),
        elem: Cow::Owned(elem),
    })
}

pub(super) fn delete(o: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Delete(o))
}
