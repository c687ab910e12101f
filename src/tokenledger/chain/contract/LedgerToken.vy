# pragma version ~=0.4.3
# @license MIT
"""
@title tokenledger's token: the ledger replayed on an EVM chain
@notice An ERC-20 (18 decimals) whose supply and balances move only by the
        ledger's entries while the ledger holds custody: the operator applies
        each sealed entry once, in chain order, with its chain position
        (`seq`) and chain hash. `last_seq` is the chain's own record of what
        is applied: an entry out of order, or one already applied, is refused.
        Holders may still use the standard ERC-20 functions; the ledger's
        reconciliation reports any such transfer it did not send.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

# Emitted right after the Transfer of each ledger entry: its reference.
# `ledger_time` is the entry's own timestamp (Unix seconds): blocks cannot be
# backdated, so the ledger's time travels here.
event Entry:
    seq: indexed(uint256)
    chain_hash: bytes32
    ledger_time: uint256

event Anchored:
    last_seq: indexed(uint256)
    chain_hash: bytes32
    merkle_root: bytes32

event OperatorChanged:
    previous: indexed(address)
    operator: indexed(address)

MAX_BATCH: constant(uint256) = 256

name: public(String[32])
symbol: public(String[8])
decimals: public(constant(uint8)) = 18
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])

operator: public(address)
last_seq: public(uint256)
last_hash: public(bytes32)
anchor_seq: public(uint256)
anchor_chain_hash: public(bytes32)
anchor_merkle_root: public(bytes32)


@deploy
def __init__(token_name: String[32], token_symbol: String[8]):
    self.name = token_name
    self.symbol = token_symbol
    self.operator = msg.sender
    log OperatorChanged(previous=empty(address), operator=msg.sender)


# -- ERC-20 ------------------------------------------------------------------

@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def transferFrom(owner: address, receiver: address, amount: uint256) -> bool:
    # Underflow reverts: no allowance, no transfer.
    self.allowance[owner][msg.sender] -= amount
    self._transfer(owner, receiver, amount)
    return True


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "transfer to the zero address"
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)


# -- the ledger's entries (operator only) -------------------------------------

@internal
def _apply(sender: address, receiver: address, amount: uint256, seq: uint256,
           chain_hash: bytes32, ledger_time: uint256):
    assert seq == self.last_seq + 1, "entry out of order or already applied"
    assert amount > 0, "an entry moves a positive value"
    assert sender != receiver, "an entry has two distinct parties"
    if sender == empty(address):
        self.totalSupply += amount
    else:
        self.balanceOf[sender] -= amount
    if receiver == empty(address):
        self.totalSupply -= amount
    else:
        self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)
    log Entry(seq=seq, chain_hash=chain_hash, ledger_time=ledger_time)
    self.last_seq = seq
    self.last_hash = chain_hash


@internal
@view
def _only_operator():
    assert msg.sender == self.operator, "only the operator applies entries"


@external
def mint(receiver: address, amount: uint256, seq: uint256, chain_hash: bytes32,
         ledger_time: uint256):
    self._only_operator()
    assert receiver != empty(address), "mint to the zero address"
    self._apply(empty(address), receiver, amount, seq, chain_hash, ledger_time)


@external
def burn(sender: address, amount: uint256, seq: uint256, chain_hash: bytes32,
         ledger_time: uint256):
    self._only_operator()
    assert sender != empty(address), "burn from the zero address"
    self._apply(sender, empty(address), amount, seq, chain_hash, ledger_time)


@external
def move(sender: address, receiver: address, amount: uint256, seq: uint256,
         chain_hash: bytes32, ledger_time: uint256):
    self._only_operator()
    assert sender != empty(address) and receiver != empty(address), "a move has two holders"
    self._apply(sender, receiver, amount, seq, chain_hash, ledger_time)


@external
def apply_batch(senders: DynArray[address, MAX_BATCH], receivers: DynArray[address, MAX_BATCH],
                amounts: DynArray[uint256, MAX_BATCH], first_seq: uint256,
                hashes: DynArray[bytes32, MAX_BATCH], times: DynArray[uint256, MAX_BATCH]):
    """
    @notice Apply consecutive entries from `first_seq` on, one Transfer log each.
            The zero address as sender is a mint, as receiver a burn.
    """
    self._only_operator()
    count: uint256 = len(senders)
    assert count > 0, "an empty batch"
    assert len(receivers) == count and len(amounts) == count, "columns of unequal length"
    assert len(hashes) == count and len(times) == count, "columns of unequal length"
    for i: uint256 in range(count, bound=MAX_BATCH):
        self._apply(senders[i], receivers[i], amounts[i], first_seq + i, hashes[i], times[i])


@external
def anchor(last_seq: uint256, chain_hash: bytes32, merkle_root: bytes32):
    """
    @notice Record the ledger's latest checkpoint: an anchor no database edit can move.
    """
    self._only_operator()
    assert last_seq > self.anchor_seq, "an anchor only moves forward"
    self.anchor_seq = last_seq
    self.anchor_chain_hash = chain_hash
    self.anchor_merkle_root = merkle_root
    log Anchored(last_seq=last_seq, chain_hash=chain_hash, merkle_root=merkle_root)


@external
def set_operator(operator: address):
    """
    @notice Hand custody to another key (a key rotation, or the end of the custodial phase).
    """
    self._only_operator()
    assert operator != empty(address), "the operator cannot be the zero address"
    log OperatorChanged(previous=self.operator, operator=operator)
    self.operator = operator
