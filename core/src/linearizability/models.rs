//! Ready-made sequential specifications for [`check`](super::check) and
//! [`check_per_key`](super::check_per_key). Each model also exposes `apply`, the reference
//! implementation its `step` is derived from (handy for generating expected results).

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use super::Model;

/// A read/write/compare-and-set register holding a `V`, initially empty.
pub struct Register<V>(PhantomData<fn() -> V>);

impl<V> Register<V> {
    pub fn new() -> Self {
        Register(PhantomData)
    }
}

impl<V> Default for Register<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> fmt::Debug for Register<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Register")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterInput<V> {
    Write(V),
    Read,
    /// Set to `new` if the register holds `expected` (an empty register matches nothing).
    Cas {
        expected: V,
        new: V,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOutput<V> {
    /// A write's acknowledgement.
    Written,
    /// A read's result (`None`: never written).
    Read(Option<V>),
    /// Whether a CAS took effect.
    Cas(bool),
}

impl<V: Clone + Eq> Register<V> {
    /// The sequential semantics: the next state and the result.
    pub fn apply(state: &Option<V>, input: &RegisterInput<V>) -> (Option<V>, RegisterOutput<V>) {
        match input {
            RegisterInput::Write(v) => (Some(v.clone()), RegisterOutput::Written),
            RegisterInput::Read => (state.clone(), RegisterOutput::Read(state.clone())),
            RegisterInput::Cas { expected, new } => {
                if state.as_ref() == Some(expected) {
                    (Some(new.clone()), RegisterOutput::Cas(true))
                } else {
                    (state.clone(), RegisterOutput::Cas(false))
                }
            }
        }
    }
}

impl<V: Clone + Eq + Hash> Model for Register<V> {
    type State = Option<V>;
    type Input = RegisterInput<V>;
    type Output = RegisterOutput<V>;

    fn init(&self) -> Option<V> {
        None
    }

    fn step(
        &self,
        state: &Option<V>,
        input: &RegisterInput<V>,
        output: Option<&RegisterOutput<V>>,
    ) -> Option<Option<V>> {
        let (next, out) = Self::apply(state, input);
        output.is_none_or(|o| *o == out).then_some(next)
    }
}

/// One ZooKeeper znode (per path), holding data and a data version; initially absent. Deleting
/// and re-creating restarts the version at 0, as in ZooKeeper. Children, ACLs and ephemerality
/// are out of scope (a non-empty parent's delete is a multi-key matter).
pub struct Znode<D>(PhantomData<fn() -> D>);

impl<D> Znode<D> {
    pub fn new() -> Self {
        Znode(PhantomData)
    }
}

impl<D> Default for Znode<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D> fmt::Debug for Znode<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Znode")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ZnodeInput<D> {
    /// `create` → `Ok` | `NodeExists`.
    Create(D),
    /// `setData` with an expected version (`-1`: any) → `Version(new)` | `BadVersion` | `NoNode`.
    SetData { data: D, version: i32 },
    /// `delete` with an expected version (`-1`: any) → `Ok` | `BadVersion` | `NoNode`.
    Delete { version: i32 },
    /// `getData` → `Data(data, version)` | `NoNode`.
    GetData,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ZnodeOutput<D> {
    /// A successful create or delete.
    Ok,
    /// A successful setData: the node's new data version.
    Version(i32),
    /// A successful getData.
    Data(D, i32),
    NodeExists,
    BadVersion,
    NoNode,
}

/// A znode's state: `None` if absent, else its data and data version.
pub type ZnodeState<D> = Option<(D, i32)>;

impl<D: Clone + Eq> Znode<D> {
    /// The sequential semantics: the next state and the result.
    pub fn apply(state: &ZnodeState<D>, input: &ZnodeInput<D>) -> (ZnodeState<D>, ZnodeOutput<D>) {
        let unchanged = |out| (state.clone(), out);
        match (input, state) {
            (ZnodeInput::Create(data), None) => (Some((data.clone(), 0)), ZnodeOutput::Ok),
            (ZnodeInput::Create(_), Some(_)) => unchanged(ZnodeOutput::NodeExists),
            (
                ZnodeInput::SetData { .. } | ZnodeInput::Delete { .. } | ZnodeInput::GetData,
                None,
            ) => unchanged(ZnodeOutput::NoNode),
            (ZnodeInput::SetData { data, version }, Some((_, current))) => {
                if *version == -1 || version == current {
                    let next = current.wrapping_add(1);
                    (Some((data.clone(), next)), ZnodeOutput::Version(next))
                } else {
                    unchanged(ZnodeOutput::BadVersion)
                }
            }
            (ZnodeInput::Delete { version }, Some((_, current))) => {
                if *version == -1 || version == current {
                    (None, ZnodeOutput::Ok)
                } else {
                    unchanged(ZnodeOutput::BadVersion)
                }
            }
            (ZnodeInput::GetData, Some((data, version))) => {
                unchanged(ZnodeOutput::Data(data.clone(), *version))
            }
        }
    }
}

impl<D: Clone + Eq + Hash> Model for Znode<D> {
    type State = ZnodeState<D>;
    type Input = ZnodeInput<D>;
    type Output = ZnodeOutput<D>;

    fn init(&self) -> ZnodeState<D> {
        None
    }

    fn step(
        &self,
        state: &ZnodeState<D>,
        input: &ZnodeInput<D>,
        output: Option<&ZnodeOutput<D>>,
    ) -> Option<ZnodeState<D>> {
        let (next, out) = Self::apply(state, input);
        output.is_none_or(|o| *o == out).then_some(next)
    }
}
