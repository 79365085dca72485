// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Owned} from "./Owned.sol";
import {IAIConfig} from "./IAIConfig.sol";

/// @title WorkerRegistry (lcw devnet)
/// @notice Worker stake, encryption keys, models, the active-job counter, slashing and suspension,
/// with the upstream ABI. Decisions the upstream reference leaves open are listed in
/// contracts/README.md.
contract WorkerRegistry is Owned {
    error ActiveJobsExist(address worker, uint256 activeJobCount);
    error ActiveJobsExistForModel(address worker, bytes32 modelId, uint32 count);
    error InsufficientStake(uint256 required, uint256 provided);
    error InvalidEncryptionKey();
    error ModelAlreadySupported(bytes32 modelId);
    error ModelNotSupported(bytes32 modelId);
    error ModelNotWhitelisted(bytes32 modelId);
    error NoSlashedFunds();
    error NotAuthorized(address caller);
    error StillSuspended(address worker, uint256 until);
    error TransferFailed();
    error WorkerAlreadyRegistered(address worker);
    error WorkerNotRegistered(address worker);
    error WorkerNotSuspended(address worker);
    error ZeroAddress();
    error CapabilityExists(string name);
    error CapabilityLimitReached();
    error UnknownCapabilityBits(uint256 mask);
    // Declared for ABI parity with upstream (checkpoints, guardian, OZ set).
    error CheckpointUnorderedInsertion();
    error ModelNotRegistered(bytes32 modelId);
    error NoEligibleWorkers();
    error NotGuardianOrOwner(address caller);
    error WorkerIsSuspended(address worker, uint256 until);
    error WorkerNotInEligibleSet(address worker, bytes32 modelId);
    error EnforcedPause();
    error ExpectedPause();
    error GuardianAlreadySunset();
    error ReentrancyGuardReentrantCall();

    event WorkerRegistered(address indexed worker, bytes encryptionPubKey);
    event WorkerDeregistered(address indexed worker);
    event WorkerDeactivated(address indexed worker, bytes32 indexed modelId);
    event WorkerSlashed(address indexed worker, uint256 amount, uint256 newStake);
    event WorkerSuspended(address indexed worker, uint256 until);
    event WorkerReinstated(address indexed worker);
    event OffensesReset(address indexed worker, uint32 previousCount);
    event StakeTopUp(address indexed worker, uint256 amount, uint256 newStake);
    event StakeWithdrawn(address indexed worker, uint256 amount, uint256 newStake);
    event SlashedFundsWithdrawn(address indexed to, uint256 amount);
    event ModelAdded(address indexed worker, bytes32 indexed modelId);
    event ModelRemoved(address indexed worker, bytes32 indexed modelId);
    event ModelWhitelisted(bytes32 indexed modelId);
    event ModelDelisted(bytes32 indexed modelId);
    event WorkerCapabilitiesSet(address indexed worker, uint256 mask);
    event CapabilityRegistered(uint8 indexed bit, string name);
    // Declared for ABI parity with upstream; the devnet never emits them.
    event GuardianUpdated(address indexed oldGuardian, address indexed newGuardian);
    event Paused(address account);
    event Unpaused(address account);
    event Upgraded(address indexed implementation);
    event Initialized(uint64 version);

    struct Worker {
        bool registered;
        uint32 offenseCount;
        uint64 suspendedUntil;
        uint256 stake;
        uint256 activeJobs;
        bytes encryptionKey;
        bytes32[] models;
    }

    uint256 private constant BPS = 10_000;

    address public immutable aiConfig;
    address public immutable jobRegistry;

    mapping(address => Worker) private workers;
    mapping(address => mapping(bytes32 => bool)) private supported;
    mapping(address => mapping(bytes32 => uint32)) private activePerModel;
    mapping(bytes32 => bool) private whitelisted;
    mapping(bytes32 => address[]) private modelWorkers;
    mapping(bytes32 => mapping(address => uint256)) private modelWorkerIndex; // index + 1
    uint256 private slashedFunds;
    string[] private capabilityNames; // by bit
    mapping(bytes32 => uint256) private capabilityBit; // keccak256(name) => bit + 1
    mapping(address => uint256) private workerCapabilities;

    constructor(address initialOwner, address aiConfig_, address jobRegistry_) Owned(initialOwner) {
        if (aiConfig_ == address(0) || jobRegistry_ == address(0)) revert ZeroAddress();
        aiConfig = aiConfig_;
        jobRegistry = jobRegistry_;
    }

    modifier onlyJobRegistry() {
        if (msg.sender != jobRegistry) revert NotAuthorized(msg.sender);
        _;
    }

    // ---------------------------------------------------------------- registration and stake

    /// @notice Registers the caller with `msg.value` as stake. The key is a 65-byte uncompressed
    /// P-256 point (0x04 prefix, upstream rule) or a 32-byte X25519 key (devnet extension).
    function registerWorker(bytes calldata encryptionPubKey) external payable {
        Worker storage w = workers[msg.sender];
        if (w.registered) revert WorkerAlreadyRegistered(msg.sender);
        bool p256 = encryptionPubKey.length == 65 && encryptionPubKey[0] == 0x04;
        if (!p256 && encryptionPubKey.length != 32) revert InvalidEncryptionKey();
        uint256 minStake = IAIConfig(aiConfig).getMinWorkerStake();
        if (msg.value < minStake) revert InsufficientStake(minStake, msg.value);
        w.registered = true;
        w.stake = msg.value;
        w.encryptionKey = encryptionPubKey;
        emit WorkerRegistered(msg.sender, encryptionPubKey);
    }

    /// @notice Removes the caller and returns its whole stake. Reverts while jobs are active.
    function deregisterWorker() external {
        Worker storage w = _registered(msg.sender);
        if (w.activeJobs > 0) revert ActiveJobsExist(msg.sender, w.activeJobs);
        bytes32[] storage ms = w.models;
        for (uint256 i = ms.length; i > 0; i--) {
            bytes32 modelId = ms[i - 1];
            supported[msg.sender][modelId] = false;
            _removeFromModel(modelId, msg.sender);
            emit ModelRemoved(msg.sender, modelId);
            ms.pop();
        }
        uint256 stake = w.stake;
        w.registered = false;
        w.stake = 0;
        delete w.encryptionKey;
        emit WorkerDeregistered(msg.sender);
        _send(msg.sender, stake);
    }

    function topUpStake() external payable {
        Worker storage w = _registered(msg.sender);
        w.stake += msg.value;
        emit StakeTopUp(msg.sender, msg.value, w.stake);
    }

    /// @notice Withdraws part of the stake; what remains must still cover the minimum stake.
    function withdrawStake(uint256 amount) external {
        Worker storage w = _registered(msg.sender);
        uint256 minStake = IAIConfig(aiConfig).getMinWorkerStake();
        if (amount > w.stake || w.stake - amount < minStake) {
            revert InsufficientStake(minStake, amount > w.stake ? 0 : w.stake - amount);
        }
        w.stake -= amount;
        emit StakeWithdrawn(msg.sender, amount, w.stake);
        _send(msg.sender, amount);
    }

    /// @notice Lifts a suspension once its cooldown has passed; resets the offense count.
    function reinstate() external {
        Worker storage w = _registered(msg.sender);
        if (w.suspendedUntil == 0) revert WorkerNotSuspended(msg.sender);
        if (block.timestamp < w.suspendedUntil) revert StillSuspended(msg.sender, w.suspendedUntil);
        uint256 minStake = IAIConfig(aiConfig).getMinWorkerStake();
        if (w.stake < minStake) revert InsufficientStake(minStake, w.stake);
        uint32 previous = w.offenseCount;
        w.offenseCount = 0;
        w.suspendedUntil = 0;
        emit OffensesReset(msg.sender, previous);
        emit WorkerReinstated(msg.sender);
    }

    // ---------------------------------------------------------------- models

    function addSupportedModel(bytes32 modelId) external {
        Worker storage w = _registered(msg.sender);
        if (!whitelisted[modelId]) revert ModelNotWhitelisted(modelId);
        if (supported[msg.sender][modelId]) revert ModelAlreadySupported(modelId);
        supported[msg.sender][modelId] = true;
        w.models.push(modelId);
        modelWorkers[modelId].push(msg.sender);
        modelWorkerIndex[modelId][msg.sender] = modelWorkers[modelId].length;
        emit ModelAdded(msg.sender, modelId);
    }

    function removeSupportedModel(bytes32 modelId) external {
        Worker storage w = _registered(msg.sender);
        if (!supported[msg.sender][modelId]) revert ModelNotSupported(modelId);
        uint32 active = activePerModel[msg.sender][modelId];
        if (active > 0) revert ActiveJobsExistForModel(msg.sender, modelId, active);
        supported[msg.sender][modelId] = false;
        bytes32[] storage ms = w.models;
        for (uint256 i = 0; i < ms.length; i++) {
            if (ms[i] == modelId) {
                ms[i] = ms[ms.length - 1];
                ms.pop();
                break;
            }
        }
        _removeFromModel(modelId, msg.sender);
        emit ModelRemoved(msg.sender, modelId);
    }

    function addWhitelistedModel(bytes32 modelId) external onlyOwner {
        whitelisted[modelId] = true;
        emit ModelWhitelisted(modelId);
    }

    function removeWhitelistedModel(bytes32 modelId) external onlyOwner {
        whitelisted[modelId] = false;
        emit ModelDelisted(modelId);
    }

    // ---------------------------------------------------------------- capabilities

    /// @notice Registers a capability name (governance) at the next free bit of the mask.
    function registerCapability(string calldata name) external onlyOwner returns (uint8 bit) {
        bytes32 key = keccak256(bytes(name));
        if (capabilityBit[key] != 0) revert CapabilityExists(name);
        uint256 count = capabilityNames.length;
        if (count >= 256) revert CapabilityLimitReached();
        bit = uint8(count);
        capabilityNames.push(name);
        capabilityBit[key] = count + 1;
        emit CapabilityRegistered(bit, name);
    }

    /// @notice Sets (overwrites, does not merge) the caller's capability mask; only registered
    /// bits are accepted. Capabilities survive deregistration, like the offense count.
    function setCapabilities(uint256 mask) external {
        _registered(msg.sender);
        if (mask >> capabilityNames.length != 0) revert UnknownCapabilityBits(mask);
        workerCapabilities[msg.sender] = mask;
        emit WorkerCapabilitiesSet(msg.sender, mask);
    }

    function getCapabilityCount() external view returns (uint16) {
        return uint16(capabilityNames.length);
    }

    /// @notice The mask bit of `name`, or 0 when it is not registered.
    function getCapabilityMask(string calldata name) external view returns (uint256) {
        uint256 bit = capabilityBit[keccak256(bytes(name))];
        return bit == 0 ? 0 : 1 << (bit - 1);
    }

    /// @notice The name at `bit`, or "" when none is registered there.
    function getCapabilityName(uint8 bit) external view returns (string memory) {
        return bit < capabilityNames.length ? capabilityNames[bit] : "";
    }

    function getWorkerCapabilities(address worker) external view returns (uint256) {
        return workerCapabilities[worker];
    }

    // ---------------------------------------------------------------- called by JobRegistry

    function incrementActiveJobs(address worker, bytes32 modelId) external onlyJobRegistry {
        workers[worker].activeJobs += 1;
        activePerModel[worker][modelId] += 1;
    }

    function decrementActiveJobs(address worker, bytes32 modelId) external onlyJobRegistry {
        workers[worker].activeJobs -= 1;
        activePerModel[worker][modelId] -= 1;
    }

    function slash(address worker, uint256 bps) external onlyJobRegistry {
        _slash(worker, bps, address(0));
    }

    /// @notice Slashes `bps` of the minimum stake (capped by maxSlashBps and by the stake) and pays
    /// `timeoutBountyBps` of the slashed amount to `bountyRecipient` (none when it is zero).
    function slashWithBounty(address worker, uint256 bps, address bountyRecipient)
        external
        onlyJobRegistry
        returns (uint256 slashAmount, uint256 bountyPaid)
    {
        return _slash(worker, bps, bountyRecipient);
    }

    function resetOffenses(address worker) external onlyOwner {
        Worker storage w = _registered(worker);
        uint32 previous = w.offenseCount;
        w.offenseCount = 0;
        emit OffensesReset(worker, previous);
    }

    function withdrawSlashedFunds() external onlyOwner {
        uint256 amount = slashedFunds;
        if (amount == 0) revert NoSlashedFunds();
        slashedFunds = 0;
        emit SlashedFundsWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ---------------------------------------------------------------- views

    function getActiveJobCount(address worker) external view returns (uint256) {
        return workers[worker].activeJobs;
    }

    function getWorkerStake(address worker) external view returns (uint256) {
        return workers[worker].stake;
    }

    function getWorkerEncryptionKey(address worker) external view returns (bytes memory) {
        return workers[worker].encryptionKey;
    }

    function isWorkerRegistered(address worker) external view returns (bool) {
        return workers[worker].registered;
    }

    function isWorkerSuspended(address worker) public view returns (bool) {
        return workers[worker].suspendedUntil != 0;
    }

    function getSuspendedUntil(address worker) external view returns (uint256) {
        return workers[worker].suspendedUntil;
    }

    function getOffenseCount(address worker) external view returns (uint256) {
        return workers[worker].offenseCount;
    }

    function getSlashedFunds() external view returns (uint256) {
        return slashedFunds;
    }

    function isModelWhitelisted(bytes32 modelId) external view returns (bool) {
        return whitelisted[modelId];
    }

    function workerSupportsModel(address worker, bytes32 modelId) external view returns (bool) {
        return supported[worker][modelId];
    }

    function getWorkerModels(address worker) external view returns (bytes32[] memory) {
        return workers[worker].models;
    }

    /// @notice Registered, not suspended, stake at least the minimum, model whitelisted and supported.
    function isEligible(address worker, bytes32 modelId) public view returns (bool) {
        Worker storage w = workers[worker];
        return w.registered && w.suspendedUntil == 0 && whitelisted[modelId] && supported[worker][modelId]
            && w.stake >= IAIConfig(aiConfig).getMinWorkerStake();
    }

    function getEligibleWorkers(bytes32 modelId) external view returns (address[] memory eligible) {
        address[] storage all = modelWorkers[modelId];
        eligible = new address[](all.length);
        uint256 n;
        for (uint256 i = 0; i < all.length; i++) {
            if (isEligible(all[i], modelId)) eligible[n++] = all[i];
        }
        assembly {
            mstore(eligible, n)
        }
    }

    function getTreasury() external view returns (address) {
        return owner();
    }

    // ---------------------------------------------------------------- internals

    function _registered(address worker) private view returns (Worker storage w) {
        w = workers[worker];
        if (!w.registered) revert WorkerNotRegistered(worker);
    }

    function _slash(address worker, uint256 bps, address bountyRecipient)
        private
        returns (uint256 amount, uint256 bounty)
    {
        IAIConfig cfg = IAIConfig(aiConfig);
        Worker storage w = workers[worker];
        uint256 maxBps = cfg.getMaxSlashBps();
        if (bps > maxBps) bps = maxBps;
        uint256 minStake = cfg.getMinWorkerStake();
        amount = minStake * bps / BPS;
        if (amount > w.stake) amount = w.stake;
        bool wasActive = w.stake >= minStake;
        w.stake -= amount;
        emit WorkerSlashed(worker, amount, w.stake);
        if (wasActive && w.stake < minStake) {
            for (uint256 i = 0; i < w.models.length; i++) {
                emit WorkerDeactivated(worker, w.models[i]);
            }
        }
        w.offenseCount += 1;
        if (w.suspendedUntil == 0 && w.offenseCount >= cfg.getSuspensionThreshold()) {
            w.suspendedUntil = uint64(block.timestamp + cfg.getSuspensionCooldown());
            emit WorkerSuspended(worker, w.suspendedUntil);
        }
        if (bountyRecipient != address(0)) bounty = amount * cfg.getTimeoutBountyBps() / BPS;
        slashedFunds += amount - bounty;
        if (bounty > 0) _send(bountyRecipient, bounty);
    }

    function _removeFromModel(bytes32 modelId, address worker) private {
        uint256 idx = modelWorkerIndex[modelId][worker];
        if (idx == 0) return;
        address[] storage list = modelWorkers[modelId];
        address last = list[list.length - 1];
        list[idx - 1] = last;
        modelWorkerIndex[modelId][last] = idx;
        list.pop();
        delete modelWorkerIndex[modelId][worker];
    }

    function _send(address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
